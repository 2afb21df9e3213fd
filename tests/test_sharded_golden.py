"""Sharded golden: 1, 2 and 8 (fake CPU) devices give the one-device golden's output, for both bases, with and
without the clustered coarse stage, and in the certified tolerance mode."""

import numpy as np
import pytest

from tests.helpers.multidevice import GOLDEN_CONFIGS

CONFIGS = GOLDEN_CONFIGS


@pytest.fixture(scope="module")
def runs(multidevice_runs):
    """{devices: (outputs, metadata)} of the sharded golden on 1, 2 and 8 fake CPU devices (conftest.py)."""
    return {d: (arrays["golden"], {"devices": meta["devices"], **meta["golden"]})
            for d, (arrays, meta) in multidevice_runs.items()}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_device_count_equals_one_device_golden(runs, name):
    reference = runs[1][0][f"{name}/one-device"]
    assert np.all(np.isfinite(reference))
    for devices in (1, 2, 8):
        assert runs[devices][1]["devices"] == devices
        np.testing.assert_allclose(runs[devices][0][name], reference, atol=3e-6, rtol=1e-5)


def test_rows_are_split_evenly(runs):
    """120 rows of 64 pixels: 60 per device on 2 devices, 15 on 8."""
    for devices, rows in ((1, 120), (2, 60), (8, 15)):
        for shapes in runs[devices][1]["shard_shapes"].values():
            assert shapes == [[rows, 64]]


def test_cli_samples_with_the_sharded_golden(tmp_path, digits_index_path):
    """`sample --denoiser golden-sharded` writes the samples `--denoiser golden` writes (same noise and pools)."""
    import h5py
    from typer.testing import CliRunner

    from diffcli.cli import app

    common = ["sample", "--index", str(digits_index_path), "--golden-base", "empirical", "--golden-k-min", "40",
              "--golden-k-max", "80", "--solver", "ddpm", "--steps", "4", "-n", "4", "--json"]
    samples = {}
    for name in ("golden", "golden-sharded"):
        res = CliRunner().invoke(app, [*common, "--denoiser", name, "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        with h5py.File(tmp_path / name / "samples.h5") as f:
            samples[name] = f["samples"][:]
    np.testing.assert_allclose(samples["golden-sharded"], samples["golden"], atol=1e-5)
