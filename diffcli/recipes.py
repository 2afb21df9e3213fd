"""Recipes: TOML files whose top-level keys are option names; `[datasets.NAME]` tables override per dataset."""

from __future__ import annotations

import os
import tomllib

from diffcli.errors import DiffcliError, UsageError


def load_recipe(path: str, *, dataset_name: str | None, allowed) -> dict:
    """Options from a recipe for this dataset (top level, then its [datasets.NAME] table over it)."""
    if not os.path.exists(path):
        raise DiffcliError(f"recipe file '{path}' does not exist.")
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DiffcliError(f"recipe '{path}' is not valid TOML ({exc}).") from None
    tables = doc.pop("datasets", {}) or {}
    doc = {k: v for k, v in doc.items() if not isinstance(v, dict) and k not in ("description", "expected")}
    if dataset_name is not None and dataset_name in tables:
        doc.update({k: v for k, v in tables[dataset_name].items() if not isinstance(v, dict)})
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise UsageError(f"recipe '{path}' sets unknown option '{unknown[0]}'; known options: {', '.join(sorted(allowed))}.")
    return doc
