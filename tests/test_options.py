"""Options that belong to their component: one field per flag, defaults in one place, inapplicable flags refused."""

import dataclasses
import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from diffcli.cli import app
from diffcli.denoisers.options import DENOISER_OPTIONS, GoldenOptions
from diffcli.errors import UsageError
from diffcli.options import flag_fields, flag_name
from diffcli.sample.settings import COMPONENTS, RunOptions, all_option_fields, resolve_settings
from diffcli.schedules.options import SCHEDULE_OPTIONS
from diffcli.solvers.options import SOLVER_OPTIONS, PicardOptions

runner = CliRunner()
TINY = ["--steps", "2", "-n", "2", "--solver", "euler"]


def sample_flags() -> set[str]:
    """Every long flag `diffcli sample` accepts (from the click command Typer builds)."""
    import typer.main

    cmd = typer.main.get_command(app).commands["sample"]
    return {o for p in cmd.params for o in p.opts + p.secondary_opts if o.startswith("--")}


def test_every_component_flag_is_one_field_with_one_default():
    by_name = {}
    for table in COMPONENTS.values():
        for cls in table.values():
            for f in flag_fields(cls):
                by_name.setdefault(f.name, []).append(f)
    for name, fields in by_name.items():  # a flag shared by several components is one definition
        first = fields[0]
        for f in fields[1:]:
            assert (f.default, dict(f.metadata)) == (first.default, dict(first.metadata)), name
    flags = sample_flags()
    for name, f in all_option_fields().items():
        assert flag_name(name) in flags, name
        if f.metadata["kind"] is bool:
            assert "--no-" + flag_name(name)[2:] in flags
    own = {"--index", "--root", "--out", "--overwrite", "--json", "--recipe", "--shard", "--coordinator",
           "--num-processes", "--process-id", "--join-timeout", "--help"}
    fielded = {flag_name(n) for n in all_option_fields()} | {"--no-" + flag_name(n)[2:] for n in all_option_fields()}
    assert flags - own <= fielded  # no flag without a field


def test_every_registered_component_has_an_options_class():
    from diffcli.denoisers import DENOISERS
    from diffcli.schedules import SCHEDULES
    from diffcli.solvers import SOLVERS

    assert set(DENOISER_OPTIONS) == set(DENOISERS)
    assert set(SOLVER_OPTIONS) == set(SOLVERS)
    assert set(SCHEDULE_OPTIONS) == set(SCHEDULES)


def test_options_check_types_and_bounds_when_made():
    with pytest.raises(UsageError, match="--picard-window needs a whole number"):
        PicardOptions(picard_window=2.5)
    with pytest.raises(UsageError, match="--picard-mode"):
        PicardOptions(picard_mode="sideways")
    with pytest.raises(UsageError, match="--num-samples must be at least 1"):
        RunOptions(num_samples=0)
    with pytest.raises(UsageError, match="--golden-base"):
        GoldenOptions(golden_base="nearest")
    assert GoldenOptions.from_settings({"golden_k_max": 10, "picard_tol": 1.0}).golden_k_max == 10


def test_settings_split_by_component_and_recorded_flat():
    s = resolve_settings({"solver": "picard", "picard_tol": 1e-3, "denoiser": "golden", "golden_k_max": 40})
    assert s.solver.picard_tol == 1e-3 and s.denoiser.golden_k_max == 40 and s.schedule.rho == 7.0
    flat = s.recorded()
    assert flat["picard_tol"] == 1e-3 and flat["golden_k_max"] == 40 and "chunk_size" not in flat
    json.dumps(flat)


@pytest.mark.parametrize("args, flag, owner", [
    (["--solver", "heun", "--picard-newton"], "--picard-newton", "--solver picard"),
    (["--denoiser", "empirical", "--golden-k-max", "10"], "--golden-k-max", "--denoiser golden"),
    (["--schedule", "vp-leading", "--sigma-min", "0.1"], "--sigma-min", "--schedule edm"),
    (["--solver", "euler", "--eta", "0.5"], "--eta", "--solver ddpm"),
    (["--denoiser", "gmm", "--chunk-size", "64"], "--chunk-size", "--denoiser empirical"),
])
def test_a_flag_for_a_component_not_selected_is_refused(args, flag, owner, tmp_path):
    res = runner.invoke(app, ["sample", *args, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    line = res.stderr.strip()
    assert line.count("\n") == 0 and flag in line and owner in line and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_recipe_keys_for_other_components_are_named_once(tmp_path, digits_index_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('golden_k_max = 40\npicard_tol = 0.01\nsolver = "euler"\nsteps = 2\n')
    res = runner.invoke(app, ["sample", "--index", digits_index_path, "--recipe", str(recipe), "-n", "2",
                              "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    notices = [ln for ln in res.stderr.splitlines() if "ignoring" in ln]
    assert len(notices) == 1 and "golden_k_max" in notices[0] and "picard_tol" in notices[0]
    assert json.loads(res.stdout)["settings"]["steps"] == 2


@pytest.mark.parametrize("text, key", [('steps = "ten"', "steps"), ("num_samples = 2.5", "num"),
                                       ("picard_newton = 1", "picard")])
def test_recipe_values_of_the_wrong_type_are_one_sentence(text, key, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(text + '\nsolver = "picard"\n')
    res = runner.invoke(app, ["sample", "--recipe", str(recipe), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and key in res.stderr and res.stderr.strip().count("\n") == 0, res.output
    assert not (tmp_path / "o").exists()


def test_dataset_and_index_together_are_refused(tmp_path, digits_index_path):
    res = runner.invoke(app, ["sample", "--dataset", "digits", "--index", digits_index_path,
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not both" in res.stderr


@pytest.mark.parametrize("args, code", [
    (["--steps", "0"], 2), (["--dataset", "imaginary"], 2), (["--index", "/nonexistent/x.h5"], 1),
    (["--seed", str(2**64)], 2), (["--seed", "-1"], 2), (["--schedule", "zigzag"], 2)])
def test_refused_runs_leave_no_output_folder(args, code, tmp_path):
    res = runner.invoke(app, ["sample", *args, "--out", str(tmp_path / "o")])
    assert res.exit_code == code, res.output
    assert not (tmp_path / "o").exists()


def test_seeds_use_all_64_bits_and_keep_small_seeds_unchanged():
    import jax

    from diffcli.sample.batches import initial_noise, run_key

    assert np.array_equal(np.asarray(run_key(7)), np.asarray(jax.random.PRNGKey(7)))  # keys are integers: exact
    a, b, c = (np.asarray(initial_noise(s, [0], (4,))) for s in (0, 2**32, 2**40))
    assert not np.allclose(a, b) and not np.allclose(b, c)
    assert np.asarray(initial_noise(2**64 - 1, [0], (4,))).shape == (1, 4)


def test_help_lists_every_choice_whole_at_80_columns():
    res = runner.invoke(app, ["sample", "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert res.exit_code == 0
    text = re.sub(r"[│╭╮╰╯─\s]+", " ", res.output)
    for name in [*DENOISER_OPTIONS, *SOLVER_OPTIONS]:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), name
    assert "…" not in res.output and max(len(line) for line in res.output.splitlines()) <= 80


def test_defaults_live_in_the_options_classes_only():
    """The run's defaults are read from the fields: a changed field default is what the command uses."""
    s = resolve_settings({})
    defaults = {f.name: f.default for f in dataclasses.fields(RunOptions)}
    assert s.run.denoiser == defaults["denoiser"] and s.run.solver == defaults["solver"]
    assert s.run.num_samples == defaults["num_samples"]
