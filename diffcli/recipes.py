"""Recipes: TOML files whose top-level keys are option names; `[datasets.NAME]` tables override per dataset."""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping

from diffcli.errors import DiffcliError, UsageError

SKIPPED = ("description", "expected")  # notes for people, not options
_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a finite number", str: "text", tuple: "a list",
               list: "a list"}

# what `allowed` may map a key to: None (any value), a type, a tuple of types, or a validator value -> value
Kind = type | tuple | Callable | None


def load_recipe(path: str, *, dataset_name: str | None, allowed: Mapping[str, Kind] | Iterable[str]) -> dict:
    """Options from a recipe for this dataset (top level, then its [datasets.NAME] table over it).

    `allowed` maps each option name to the type its value must have: bool, int (not a bool; 2.5 and 2.0 are
    refused), float (an int is accepted and returned as a float), str, tuple or list (a TOML array), a tuple of
    these (any one of them), None (unchecked), or a callable that returns the checked value and raises
    UsageError/ValueError/TypeError. A plain iterable of names is accepted too, with values unchecked. Every
    allowed key the recipe sets is returned, whether or not its component is selected; the caller decides.
    """
    kinds = dict(allowed) if isinstance(allowed, Mapping) else dict.fromkeys(allowed)
    doc = _read_toml(path)
    tables = doc.pop("datasets", {})
    if not isinstance(tables, dict):
        raise UsageError(f"recipe '{path}' sets datasets = {_describe(tables)}, but datasets must be a table of "
                         "per-dataset tables ([datasets.NAME]).")
    # tables under unknown names are other tools' sections (e.g. [train] of a benchmark recipe): left alone
    options = {k: v for k, v in doc.items() if k not in SKIPPED and not (isinstance(v, dict) and k not in kinds)}
    where = {k: "" for k in options}
    if dataset_name is not None and dataset_name in tables:
        table = tables[dataset_name]
        if not isinstance(table, dict):
            raise UsageError(f"recipe '{path}' sets datasets.{dataset_name} = {_describe(table)}, but it must be a "
                             "table of options.")
        for k, v in table.items():
            if not (isinstance(v, dict) and k not in kinds):
                options[k], where[k] = v, f" in [datasets.{dataset_name}]"
    unknown = sorted(set(options) - set(kinds))
    if unknown:
        raise UsageError(f"recipe '{path}' sets unknown option '{unknown[0]}'; "
                         f"known options: {', '.join(sorted(kinds))}.")
    return {k: _checked(path, k, v, kinds[k], where[k]) for k, v in options.items()}


def _read_toml(path: str) -> dict:
    if not os.path.exists(path):
        raise DiffcliError(f"recipe file '{path}' does not exist.")
    if os.path.isdir(path):
        raise DiffcliError(f"recipe '{path}' is a folder; pass a TOML file.")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DiffcliError(f"recipe '{path}' is not valid TOML ({exc}).") from None
    except OSError as exc:
        raise DiffcliError(f"recipe '{path}' could not be read ({exc.strerror or type(exc).__name__}).") from None


def _checked(path: str, key: str, value, kind: Kind, where: str):
    """`value` if it has the type `kind` asks for (an int becomes a float where a number is asked for)."""
    if kind is None:
        if isinstance(value, dict):
            raise _wrong(path, key, value, "a single value, not a table", where)
        return value
    if isinstance(kind, type) or isinstance(kind, tuple):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        for k in kinds:
            ok, out = _as_kind(value, k)
            if ok:
                return out
        raise _wrong(path, key, value, " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds), where)
    try:
        return kind(value)
    except UsageError as exc:
        raise UsageError(f"recipe '{path}' sets {key}{where}: {str(exc).rstrip('.')}.") from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"recipe '{path}' sets {key} = {_describe(value)}{where}, which is refused ({exc}).") from None


def _as_kind(value, k) -> tuple[bool, object]:
    if k is bool:
        return isinstance(value, bool), value
    if k is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if k is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else value
    if k in (tuple, list):
        return isinstance(value, list), k(value) if isinstance(value, list) else value
    return isinstance(value, k), value


def _wrong(path: str, key: str, value, expected: str, where: str) -> UsageError:
    return UsageError(f"recipe '{path}' sets {key} = {_describe(value)}{where}, but {key} needs {expected}.")


def _describe(value) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    return str(value)
