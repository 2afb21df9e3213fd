"""benchmarks/gpu_suite.py --quick, in this process: every part reports figures or says why it skipped, the JSON is
whole after the run, and the machine record names what ran."""

import json
import math

import pytest


def numbers_in(value) -> list[float]:
    """Every int/float inside a JSON value (bools excluded)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers_in(v)]
    if isinstance(value, list):
        return [x for v in value for x in numbers_in(v)]
    return []


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, digits_index_path):
    from benchmarks import gpu_suite

    out = tmp_path_factory.mktemp("gpu-suite") / "suite.json"
    result = gpu_suite.main(["--quick", "--out", str(out), "--golden-index", str(digits_index_path)])
    return result, json.loads(out.read_text())


def test_every_part_has_figures_or_a_skip_note(quick_run):
    _, saved = quick_run
    from benchmarks.gpu_suite import PARTS

    json.dumps(saved, allow_nan=False)  # strict JSON: no NaN or Infinity
    assert set(saved["parts"]) == set(PARTS)
    for name in PARTS:
        part = saved["parts"][name]
        assert part["status"] in ("done", "partial", "skipped"), (name, part.get("error"), part.get("traceback"))
        if part["status"] == "skipped":
            assert part.get("note"), name
        else:
            figures = {k: v for k, v in part.items() if k not in ("budget_s", "elapsed_s", "process_cpu_s")}
            assert numbers_in(figures), name
            assert all(math.isfinite(x) for x in numbers_in(figures) if not math.isinf(x)), name
        if part["status"] == "partial":
            assert part.get("skipped"), name


def test_quick_figures_are_the_measured_kind(quick_run):
    _, saved = quick_run
    parts = saved["parts"]
    roof = parts["roofline"]
    for key in ("matmul_f32_highest_tflops", "matmul_f32_default_tflops", "matmul_bf16_tflops", "copy_gbs"):
        assert roof[key] > 0, key
    assert roof["matmul_f32_highest_rel_error"] < 1e-4  # full float32 on this CPU
    assert 0 < parts["fullscan"]["share_of_f32_highest_matmul"]
    steps = parts["golden"]["steps"]
    assert steps and all(-1 <= s["r2_min"] <= 1 and s["golden_s"] > 0 for s in steps)
    rows = parts["picard"]["rows"]
    assert {r["mode"] for r in rows} == {"sde", "ode"}
    for r in rows:  # the distance to the sequential sample is measured, not assumed
        assert 0 <= r["picard"]["distance_max"] < 1 and isinstance(r["picard"]["within_tol"], bool)
        assert r["picard"]["rounds"] >= 1 and r["picard"]["nfe"] >= r["picard"]["rounds"]
        assert r["speedup"] > 0
    assert "measured" in parts["picard"]["goal"]
    col = parts["collocation"]
    assert col["collocation"]["error"] >= 0
    assert set(col["classic"]) == {"heun", "dpmpp-2m"}
    assert set(col["match"]) == {"heun", "dpmpp-2m"}
    assert parts["sharding"]["devices"] >= 1


def test_machine_record_names_what_ran(quick_run):
    result, saved = quick_run
    m = saved["machine"]
    for key in ("device_kind", "backend", "jax", "jaxlib", "command", "date", "nvidia_smi"):
        assert m[key], key
    assert saved["device"] == ("cpu" if m["backend"] == "cpu" else m["device_kind"])
    assert saved["preset"] == "quick"
    assert result["parts"].keys() == saved["parts"].keys()


def test_gpu_preset_refused_without_a_gpu(tmp_path):
    import jax

    from benchmarks import gpu_suite

    if jax.default_backend() == "gpu":
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as e:
        gpu_suite.main(["--out", str(tmp_path / "x.json")])
    assert e.value.code == 2
    assert not (tmp_path / "x.json").exists()


def test_loglog_match_interpolates_and_extrapolates():
    from benchmarks.gpu_parts import match_error

    rows = [{"steps": 8, "error": 1e-2, "seconds": 0.08}, {"steps": 16, "error": 2.5e-3, "seconds": 0.16}]
    hit = match_error(rows, 5e-3, colloc_seconds=0.1)  # order 2: 5e-3 is met at 8 * sqrt(2) steps
    assert hit["reached"] and not hit["extrapolated"]
    assert hit["steps_at_target"] == pytest.approx(8 * 2**0.5)
    far = match_error(rows, 2.5e-5, colloc_seconds=0.1)  # 10x below the last point: 16 * 10 steps
    assert far["extrapolated"] and not far["reached"]
    assert far["steps_at_target"] == pytest.approx(160)
    assert far["collocation_speedup"] == pytest.approx(1.6 / 0.1)
    flat = match_error([dict(rows[0]), {"steps": 16, "error": 2e-2, "seconds": 0.16}], 1e-3, colloc_seconds=0.1)
    assert not flat["reached"] and "did not fall" in flat["note"]
