"""Concentration diagnostics: closed forms of support and participation, trajectories on a small index, the CLI."""

import json

import numpy as np
import pytest
from scipy.special import softmax
from typer.testing import CliRunner

from diffcli.metrics.concentration import (
    effective_support,
    participation_ratio,
    posterior_weights,
    run_concentration,
)


def test_support_and_participation_closed_forms():
    n = 50
    uniform = np.full((1, n), 1.0 / n)
    point = np.zeros((1, n))
    point[0, 7] = 1.0
    assert effective_support(uniform, 1e-3)[0] == n and participation_ratio(uniform)[0] == pytest.approx(n)
    assert effective_support(point)[0] == 1 and participation_ratio(point)[0] == pytest.approx(1.0)
    w = np.array([[0.5, 0.3, 0.15, 0.05]])  # 1 - eps = 0.9 needs three of them
    assert effective_support(w, 0.1)[0] == 3 and effective_support(w, 0.2 + 1e-9)[0] == 2
    assert participation_ratio(w)[0] == pytest.approx(1 / (0.25 + 0.09 + 0.0225 + 0.0025))


def test_posterior_weights_against_scipy():
    rng = np.random.default_rng(0)
    data, x = rng.standard_normal((300, 6)).astype(np.float32), rng.standard_normal((4, 6))
    ref = softmax(-((x[:, None] - data[None].astype(np.float64)) ** 2).sum(-1) / (2 * 0.5**2), axis=1)
    np.testing.assert_allclose(posterior_weights(x, data, 0.5, chunk=64), ref, rtol=1e-10, atol=1e-15)


@pytest.fixture(scope="module")
def small_index(shapes_index_path):
    from diffcli.index import open_index

    return open_index(shapes_index_path)


def test_support_shrinks_along_trajectories(small_index):
    res = run_concentration(small_index, denoiser="golden", base="empirical", steps=6, num_samples=4,
                            golden_k_min=20, golden_k_max=60)
    s = res["summary"]
    assert len(s) == 6 and s[0]["sigma"] > s[-1]["sigma"]
    assert s[0]["support_mean"] > 10 * s[-1]["support_mean"]  # progressive concentration
    assert s[-1]["support_mean"] <= 2
    for row in res["per_sample"]:
        assert np.all(np.asarray(row["tail_mass"]) <= np.asarray(row["bound"]) * (1 + 1e-3) + 1e-30)
        assert all(0.0 <= r <= 1.0 for r in row["coarse_recall"] + row["proxy_recall"])
    assert s[-1]["proxy_recall_mean"] == 1.0  # at low noise the proxy screen keeps the true neighbours


def test_cli_writes_json_and_png(shapes_index_path, tmp_path):
    from diffcli.cli import app

    out = tmp_path / "conc"
    r = CliRunner().invoke(app, ["evaluate", "concentration", "--index", str(shapes_index_path), "--steps", "3",
                                 "-n", "2", "--golden-base", "empirical", "--golden-k-max", "40", "--out", str(out),
                                 "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(doc["summary"]) == 3 and (out / "support.png").stat().st_size > 1000
    assert json.loads((out / "concentration.json").read_text())["steps"] == 3
    bad = CliRunner().invoke(app, ["evaluate", "concentration", "--index", str(shapes_index_path), "--steps", "0",
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
