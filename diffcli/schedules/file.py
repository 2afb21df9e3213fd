"""Schedules read from JSON: a list of sigmas, or an object with "sigmas" (what `diffcli schedule-fit` writes).

Rules (documented in `diffcli sample --help` through get_schedule): values must be finite, non-negative and strictly
descending; a list that ends at a positive sigma gets the k-diffusion trailing 0 appended (published AYS lists end at
0.029), so a file of n positive values is n steps.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from diffcli.errors import DiffcliError


def _bad(path, why: str) -> DiffcliError:
    return DiffcliError(f"schedule file '{path}' {why}.")


def read_schedule_file(path) -> dict:
    """The parsed document as a dict with at least "sigmas" (validated float64 array ending in 0)."""
    if not os.path.isfile(path):
        raise DiffcliError(f"schedule file '{path}' does not exist.")
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"is not readable JSON ({type(exc).__name__})") from None
    if isinstance(doc, dict):
        if "sigmas" not in doc:
            raise _bad(path, 'is a JSON object without a "sigmas" list')
        doc = dict(doc)
    elif isinstance(doc, list):
        doc = {"sigmas": doc}
    else:
        raise _bad(path, 'must hold a list of sigmas or an object with "sigmas"')
    doc["sigmas"] = validate_sigmas(doc["sigmas"], path)
    return doc


def validate_sigmas(values, path="<schedule>") -> np.ndarray:
    """Finite, non-negative, strictly descending numbers; a trailing 0 is appended when missing."""
    if not isinstance(values, list) or not values:
        raise _bad(path, "needs a non-empty list of sigmas")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise _bad(path, "has a sigma that is not a number")
    if not all(math.isfinite(v) for v in values):
        raise _bad(path, "has a sigma that is not finite")
    s = np.asarray(values, np.float64)
    if np.any(s < 0):
        raise _bad(path, "has a negative sigma")
    if np.any(np.diff(s) >= 0):
        i = int(np.argmax(np.diff(s) >= 0))
        raise _bad(path, f"is not strictly descending (sigma[{i + 1}] = {s[i + 1]:g} after {s[i]:g})")
    if s[-1] > 0:
        s = np.concatenate([s, [0.0]])
    if len(s) < 2:
        raise _bad(path, "needs at least one positive sigma")
    return s


def get_sigmas_file(path, steps=None, **_) -> np.ndarray:
    """The sigmas of a schedule file; `steps` must be None or equal to the file's step count (no silent resampling)."""
    from diffcli.errors import UsageError

    sig = read_schedule_file(path)["sigmas"]
    if steps is not None and int(steps) != len(sig) - 1:
        raise UsageError(f"schedule file '{path}' has {len(sig) - 1} steps but {steps} were asked for; "
                         f"pass --steps {len(sig) - 1} or refit with --steps {steps}.")
    return sig
