"""Sigma grids by name: pure functions returning a descending float64 array of steps + 1 sigmas ending in 0.

`get_schedule(name_or_path, steps)` takes a registered name or a path to a JSON schedule file. For a file, `steps`
must be None or equal to the file's step count (a mismatch is a usage error, never a silent resampling). The fitted
schedules `las` and `ays` exist only as files written by `diffcli schedule-fit`.
"""

import os

import numpy as np

from diffcli.errors import UsageError, unknown_choice
from diffcli.noise import SIGMA_MAX, SIGMA_MIN
from diffcli.registry import resolve

SCHEDULES = {
    "edm": "diffcli.schedules.edm:get_sigmas_edm",
    "log-snr": "diffcli.schedules.families:get_sigmas_log_snr",
    "vp-leading": "diffcli.schedules.families:get_sigmas_vp_leading",
    "cosine": "diffcli.schedules.families:get_sigmas_cosine",
    "file": "diffcli.schedules.file:get_sigmas_file",
}

FITTED = ("las", "ays")  # made by `diffcli schedule-fit --method las|ays --out FILE.json`, then used as FILE.json


def looks_like_path(text: str) -> bool:
    """A schedule argument names a file when it ends in .json or contains a path separator."""
    return text.lower().endswith(".json") or os.sep in text or (os.altsep is not None and os.altsep in text)


def get_schedule(name_or_path: str, steps, *, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=7.0) -> np.ndarray:
    """The sigma grid of a registered schedule name, or of a JSON schedule file (steps None or matching)."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise UsageError("--schedule needs a schedule name or a JSON file path.")
    if name_or_path in FITTED:
        raise UsageError(f"the '{name_or_path}' schedule is fitted to data: run `diffcli schedule-fit --method "
                         f"{name_or_path} --out {name_or_path}.json` and pass --schedule {name_or_path}.json.")
    if name_or_path == "file":
        raise UsageError("pass the schedule file's path to --schedule (e.g. --schedule fitted.json).")
    if name_or_path in SCHEDULES:
        if steps is None:
            raise UsageError(f"the '{name_or_path}' schedule needs --steps.")
        fn = resolve("schedule", SCHEDULES, name_or_path)
        return fn(steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    if looks_like_path(name_or_path) or os.path.exists(name_or_path):
        from diffcli.schedules.file import get_sigmas_file

        return get_sigmas_file(name_or_path, steps)
    raise unknown_choice("schedule", name_or_path, [k for k in SCHEDULES if k != "file"] + ["FILE.json"])
