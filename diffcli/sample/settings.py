"""The settings of a sampling run: the run's own options and the options of the chosen denoiser, solver and schedule.

Every flag is a field of exactly one options class per component (diffcli/options.py); a flag given for a component
this run does not use is refused, and a recipe key for one is named in a notice. Explicit flag > recipe > default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from diffcli.denoisers.options import DENOISER_OPTIONS
from diffcli.errors import UsageError, unknown_choice
from diffcli.options import Options, flag_fields, flag_name, option
from diffcli.schedules.options import SCHEDULE_OPTIONS
from diffcli.solvers.options import SOLVER_OPTIONS

DEFAULT_STEPS = 18
SEED_LIMIT = 2**64  # the seed fills a 64-bit key word pair


@dataclass(frozen=True)
class RunOptions(Options):
    dataset: str = option("digits", help="Dataset spec NAME[:key=value,...].", short="-d")
    denoiser: str = option("empirical", help="The denoiser: " + ", ".join(DENOISER_OPTIONS) + ".")
    solver: str = option("heun", help="The solver: " + ", ".join(SOLVER_OPTIONS) + ".")
    schedule: str = option("edm", help="The sigma schedule: " + ", ".join(k for k in SCHEDULE_OPTIONS if k != "file")
                           + ", or a schedule JSON file from schedule-fit.")
    steps: int | None = option(None, kind=int, minimum=1,
                               help=f"Solver steps (default {DEFAULT_STEPS}; a schedule file brings its own).")
    num_samples: int = option(64, minimum=1, help="How many samples.", short="-n")
    seed: int = option(0, minimum=0, maximum=SEED_LIMIT - 1, help="Sample i's noise depends on (seed, i) alone.")
    batch_size: int = option(64, minimum=1, help="Samples per jitted batch.")
    grid_cols: int | None = option(None, kind=int, minimum=1, help="Columns of grid.png (default: a square).")
    class_: str | None = option(None, kind=str, help="Sample from one class of a labelled index: a label (3), labels "
                                "cycled over the samples (3,5), all (a balanced sweep) or a class name (e.g. cat).")
    class_shrinkage: float | None = option(None, kind=float, minimum=0.0, maximum=1.0,
                                           help="With --class: lam in (1 - lam) Sigma_class + lam Sigma_global for "
                                                "wiener and pca-local masks (default: the class's Ledoit-Wolf "
                                                "intensity).")


COMPONENTS = {"denoiser": DENOISER_OPTIONS, "solver": SOLVER_OPTIONS, "schedule": SCHEDULE_OPTIONS}


@dataclass(frozen=True)
class SampleSettings:
    """A run's options, one object per component (made and checked before any output folder or index is touched)."""

    run: RunOptions
    denoiser: Options
    solver: Options
    schedule: Options
    schedule_kind: str  # a registered schedule name, or "file"

    def recorded(self) -> dict:
        """Every setting as one flat JSON-able dict: the --json summary and the attributes of samples.h5."""
        flat = {}
        for part in (self.run, self.denoiser, self.solver, self.schedule):
            flat.update(part.flag_values())
        return flat


def schedule_kind(name: str) -> str:
    """'file' for a schedule file, the name for a registered schedule; anything else is one sentence."""
    from diffcli.schedules import get_schedule, looks_like_path

    if name in SCHEDULE_OPTIONS and name != "file":
        return name
    if looks_like_path(name) or os.path.exists(name):
        return "file"
    get_schedule(name, 1)  # raises its own sentence (a fitted name, 'file', or an unknown one)
    raise unknown_choice("schedule", name, SCHEDULE_OPTIONS)


def selected_classes(run: RunOptions) -> dict[str, type]:
    """{component kind: its options class} for the denoiser, solver and schedule `run` names."""
    chosen = {"denoiser": run.denoiser, "solver": run.solver, "schedule": schedule_kind(run.schedule)}
    out = {}
    for kind, name in chosen.items():
        if name not in COMPONENTS[kind]:
            raise unknown_choice(kind, name, COMPONENTS[kind])
        out[kind] = COMPONENTS[kind][name]
    return out


def all_option_fields() -> dict:
    """{field name: the first field of that name} over the run and every component (shared flags are one field)."""
    fields = {f.name: f for f in flag_fields(RunOptions)}
    for table in COMPONENTS.values():
        for cls in table.values():
            for f in flag_fields(cls):
                fields.setdefault(f.name, f)
    return fields


def owner_kinds(name: str) -> dict[str, list[str]]:
    """{component kind: the names whose options class has the flag `name`}."""
    found = {}
    for kind, table in COMPONENTS.items():
        users = [k for k, cls in table.items() if any(f.name == name for f in flag_fields(cls))]
        if users:
            found[kind] = users
    return found


def owners(name: str) -> str:
    """Which components a flag belongs to, as the user would select them (e.g. '--denoiser golden, golden-sharded')."""
    return " or ".join(f"--{kind} {', '.join(users)}" for kind, users in owner_kinds(name).items())


def uses_covariance(denoiser: str, opts: Options) -> bool:
    """Whether a denoiser reads the index's covariance factors: wiener, pca-local, golden over pca-local."""
    return denoiser in ("wiener", "pca-local") or getattr(opts, "golden_base", None) == "pca-local"


def check_class_shrinkage(run: RunOptions, denoiser_opts: Options) -> None:
    """--class-shrinkage needs --class and a denoiser that uses the class covariance; otherwise it is refused."""
    if run.class_ is None:
        raise UsageError("--class-shrinkage applies to conditional runs only; give --class too.")
    if not uses_covariance(run.denoiser, denoiser_opts):
        raise UsageError(f"--class-shrinkage applies to --denoiser wiener, pca-local or golden with --golden-base "
                         f"pca-local only; this run uses --denoiser {run.denoiser}.")


def resolve_settings(explicit: dict, recipe: dict | None = None, *, notice=lambda message: None,
                     recipe_name: str = "recipe") -> SampleSettings:
    """Explicit flags over the recipe over the defaults, split by component; inapplicable flags are refused."""
    recipe = {k: v for k, v in (recipe or {}).items() if v is not None}
    explicit = {k: v for k, v in explicit.items() if v is not None}
    merged = {**recipe, **explicit}
    run = RunOptions.from_settings(merged)
    classes = selected_classes(run)
    applicable = {f.name for cls in (RunOptions, *classes.values()) for f in flag_fields(cls)}
    for name in explicit:
        if name not in applicable:
            chosen = ", ".join(f"--{kind} {getattr(run, kind)}" for kind in owner_kinds(name))
            raise UsageError(f"{flag_name(name)} applies to {owners(name)} only; this run uses {chosen}.")
    ignored = sorted(set(recipe) - applicable - set(explicit))
    if ignored:
        notice(f"{recipe_name}: ignoring {', '.join(ignored)} (for components this run does not use).")
    parts = {kind: cls.from_settings(merged) for kind, cls in classes.items()}
    if "class_shrinkage" in explicit:
        check_class_shrinkage(run, parts["denoiser"])
    return SampleSettings(run=run, schedule_kind=schedule_kind(run.schedule), **parts)
