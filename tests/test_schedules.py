"""Schedule families, get_schedule and schedule files: shape, order, endpoints, closed forms and clear errors."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffcli import noise
from diffcli.errors import DiffcliError, UsageError
from diffcli.schedules import SCHEDULES, get_schedule
from diffcli.schedules.grid import is_valid_schedule
from tests.helpers.gaussian_oracle import karras_sigmas

RANGED = ["edm", "log-snr", "cosine"]


@pytest.mark.parametrize("name", RANGED + ["vp-leading"])
@pytest.mark.parametrize("steps", [1, 2, 5, 10, 50])
def test_schedules_are_valid_grids(name, steps):
    s = get_schedule(name, steps, sigma_min=0.01, sigma_max=50.0)
    assert s.dtype == np.float64 and s.shape == (steps + 1,)
    assert is_valid_schedule(s)
    if name in RANGED:
        assert s[0] == 50.0
        if steps > 1:
            assert s[-2] == 0.01


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(RANGED), st.integers(1, 300), st.floats(1e-4, 1.0), st.floats(1.5, 1e3))
def test_schedules_valid_for_any_range(name, steps, lo, hi):
    s = get_schedule(name, steps, sigma_min=lo, sigma_max=hi)
    assert is_valid_schedule(s) and len(s) == steps + 1 and s[0] == hi


def test_edm_matches_karras_formula():
    np.testing.assert_allclose(get_schedule("edm", 18), karras_sigmas(18), rtol=1e-12)
    np.testing.assert_allclose(get_schedule("edm", 7, sigma_min=0.1, sigma_max=5.0, rho=3.0),
                               karras_sigmas(7, 0.1, 5.0, 3.0), rtol=1e-12)


def test_log_snr_is_uniform_in_log_sigma():
    s = get_schedule("log-snr", 12, sigma_min=0.003, sigma_max=40.0)[:-1]
    d = np.diff(np.log(s))
    np.testing.assert_allclose(d, np.log(0.003 / 40.0) / 11, rtol=1e-10)


def test_vp_leading_is_ddim_leading_timesteps():
    s = get_schedule("vp-leading", 10)
    t = noise.ddpm_sigma_to_t(s[:-1], nearest=True)
    np.testing.assert_array_equal(t, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0])
    np.testing.assert_allclose(s[:-1], noise.ddpm_sigmas()[t], rtol=1e-14)
    t7 = noise.ddpm_sigma_to_t(get_schedule("vp-leading", 7)[:-1], nearest=True)
    np.testing.assert_array_equal(t7, np.arange(6, -1, -1) * (1000 // 7))
    with pytest.raises(UsageError):
        get_schedule("vp-leading", 1001)


def test_cosine_is_uniform_in_cosine_time():
    s = get_schedule("cosine", 9, sigma_min=0.01, sigma_max=20.0)[:-1]
    t = noise.cosine_sigma_to_t(s)
    np.testing.assert_allclose(np.diff(t), np.diff(t)[0], rtol=1e-8)


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="unknown schedule 'karras'.*edm"):
        get_schedule("karras", 10)
    with pytest.raises(UsageError, match="schedule-fit"):
        get_schedule("las", 10)
    with pytest.raises(UsageError, match="sigma-min"):
        get_schedule("edm", 10, sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(UsageError, match="steps"):
        get_schedule("edm", 0)
    with pytest.raises(UsageError, match="rho"):
        get_schedule("edm", 5, rho=0.0)
    assert "file" in SCHEDULES


def _write(tmp_path, obj, name="s.json", raw=None):
    p = tmp_path / name
    p.write_text(raw if raw is not None else json.dumps(obj))
    return str(p)


def test_schedule_files(tmp_path):
    s = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]  # published AYS SD1.5
    got = get_schedule(_write(tmp_path, s), None)
    np.testing.assert_array_equal(got, s + [0.0])  # a positive last value gets the trailing 0
    assert get_schedule(_write(tmp_path, s), 11).shape == (12,)
    doc = {"sigmas": [3.0, 1.0, 0.5, 0.0], "method": "las"}
    np.testing.assert_array_equal(get_schedule(_write(tmp_path, doc, "fit.json"), 3), [3.0, 1.0, 0.5, 0.0])
    with pytest.raises(UsageError, match="has 3 steps but 5 were asked for"):
        get_schedule(_write(tmp_path, doc, "fit.json"), 5)


@pytest.mark.parametrize("content, message", [
    ("[3.0, 1.0, 1.0, 0.0]", "strictly descending"),
    ("[1.0, 3.0, 0.0]", "strictly descending"),
    ("[3.0, NaN, 0.0]", "not finite"),
    ("[3.0, -1.0]", "negative"),
    ("[]", "non-empty"),
    ('{"sig": [1, 0]}', 'without a "sigmas"'),
    ('[3.0, "a", 0.0]', "not a number"),
    ("[0.0]", "at least one positive"),
    ("{not json", "not readable JSON"),
    ("42", "must hold a list"),
])
def test_bad_schedule_files_give_one_sentence(tmp_path, content, message):
    with pytest.raises(DiffcliError, match=message) as exc:
        get_schedule(_write(tmp_path, None, raw=content), None)
    assert str(exc.value).count(".") >= 1 and "\n" not in str(exc.value)


def test_missing_schedule_file(tmp_path):
    with pytest.raises(DiffcliError, match="does not exist"):
        get_schedule(str(tmp_path / "none.json"), None)


# --- diffcli schedule-fit -------------------------------------------------------------------------------------------

def _cli(args):
    from typer.testing import CliRunner

    from diffcli.cli import app

    return CliRunner().invoke(app, ["schedule-fit", *args])


def test_schedule_fit_from_a_loss_file_writes_json_and_png(tmp_path):
    from diffcli.schedules.gaussian import mmse

    lam = np.exp(np.linspace(np.log(0.05), np.log(2.0), 8))
    sig = np.exp(np.linspace(np.log(80.0), np.log(0.002), 30))
    log = tmp_path / "log.csv"
    mse = mmse(1 / sig**2, lam)
    log.write_text("sigma,loss\n" + "".join(f"{float(s)!r},{float(v / s**2)!r}\n"
                                            for s, v in zip(sig, mse, strict=False)))
    out = tmp_path / "fit" / "las.json"
    res = _cli(["--loss-file", str(log), "--loss-kind", "eps", "--method", "las", "--las-rule", "dp", "--steps", "6",
                "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert is_valid_schedule(doc["sigmas"]) and len(doc["sigmas"]) == 7 and doc["method"] == "las"
    assert set(doc["loss_curve"]) >= {"sigma", "loss", "stderr"} and doc["objective"] > 0
    np.testing.assert_allclose(doc["loss_curve"]["loss"], mmse(1 / sig**2, lam), rtol=1e-9)  # eps -> x0 conversion
    assert (tmp_path / "fit" / "las.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the file plugs straight into get_schedule, and J's rule beats EDM on J (the objective written for every method)
    np.testing.assert_array_equal(get_schedule(str(out), 6), doc["sigmas"])
    edm = _cli(["--loss-file", str(log), "--loss-kind", "eps", "--method", "edm", "--steps", "6",
                "--out", str(tmp_path / "edm.json"), "--no-plot"])
    assert edm.exit_code == 0 and json.loads((tmp_path / "edm.json").read_text())["objective"] > doc["objective"]
    ays = _cli(["--loss-file", str(log), "--loss-kind", "eps", "--method", "ays", "--steps", "6",
                "--out", str(tmp_path / "ays.json"), "--no-plot"])
    assert ays.exit_code == 0 and is_valid_schedule(json.loads((tmp_path / "ays.json").read_text())["sigmas"])


def test_schedule_fit_reads_a_log_of_a_cosine_model_through_its_timestep_table(tmp_path):
    from diffcli.models.wrappers import Parameterisation, vp_sigmas

    table = vp_sigmas(Parameterisation(model_noise="vp-cosine", model_timesteps=4000))
    t = np.arange(3999, 0, -100)
    log = tmp_path / "log.csv"
    log.write_text("timestep,loss\n" + "".join(f"{a},{float(1.0 / (1.0 + table[a] ** 2))!r}\n" for a in t))
    out = tmp_path / "las.json"
    res = _cli(["--loss-file", str(log), "--loss-kind", "eps", "--model-noise", "vp-cosine", "--model-timesteps",
                "4000", "--steps", "5", "--out", str(out), "--no-plot"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    np.testing.assert_allclose(doc["loss_curve"]["sigma"], table[t], rtol=1e-12)
    # eps loss 1/(1+sigma^2) is x0 loss sigma^2/(1+sigma^2): the unit Gaussian's
    np.testing.assert_allclose(doc["loss_curve"]["loss"], table[t] ** 2 / (1 + table[t] ** 2), rtol=1e-10)
    assert doc["source"]["model_noise"] == "vp-cosine" and doc["source"]["model_timesteps"] == 4000
    # the same log read through the default 1000-step table is out of range: one sentence, not a silent misread
    res = _cli(["--loss-file", str(log), "--loss-kind", "eps", "--steps", "5", "--out", str(tmp_path / "o.json"),
                "--no-plot"])
    assert res.exit_code == 2 and "past the 1000 timesteps" in res.output and "--model-timesteps" in res.output
    assert "Traceback" not in res.output


def test_schedule_fit_measures_a_denoiser_on_an_index(tmp_path):
    out = tmp_path / "s.json"
    res = _cli(["--dataset", "gmm:n=300,dim=4", "--denoiser", "gmm", "--method", "ays", "--steps", "5",
                "--examples", "32", "--grid-points", "12", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert is_valid_schedule(doc["sigmas"]) and len(doc["sigmas"]) == 6
    assert doc["source"]["denoiser"] == "gmm" and doc["source"]["split"] == "heldout"
    assert len(doc["loss_curve"]["sigma"]) == 12 and all(v >= 0 for v in doc["loss_curve"]["loss"])


@pytest.mark.parametrize("args, code, message", [
    (["--method", "las"], 2, "needs a loss curve"),
    (["--method", "karras"], 2, "unknown method 'karras'"),
    (["--method", "edm", "--steps", "0"], 2, "--steps"),
    (["--loss-file", "nope.csv"], 1, "does not exist"),
    (["--loss-file", "x.csv", "--dataset", "gmm"], 2, "only one of"),
    (["--loss-file", "x.csv", "--model-noise", "ve"], 2, "vp-linear or vp-cosine"),
    (["--loss-file", "x.csv", "--model-noise", "vp-cosine", "--model-beta-end", "0.03"], 2,
     "apply to --model-noise vp-linear"),
    (["--loss-file", "x.csv", "--model-sigma-data", "1.0"], 2, "applies to --loss-kind edm"),
    (["--loss-file", "x.csv", "--model-timestep-mode", "nearest"], 2, "not with --loss-file"),
])
def test_schedule_fit_errors_are_one_line(tmp_path, args, code, message):
    res = _cli([*args, "--out", str(tmp_path / "o.json")])
    assert res.exit_code == code
    assert message in res.output and "Traceback" not in res.output
