"""Options that belong to their component: one frozen dataclass per solver, denoiser or schedule.

Each field carries its flag, default, help and check (`option(...)`), and the command line, recipes, `--json`
settings and the attributes of samples.h5 are all generated from those fields. A field made with `context(...)` is
not a flag: the caller fills it (the schedule a denoiser will see, the run's seed).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from diffcli.errors import UsageError

_NUMBER = (int, float)


def option(default, *, help: str, kind: type | tuple | None = None, choices: tuple | None = None, minimum=None,
           maximum=None, positive: bool = False, short: str | None = None):
    """A dataclass field that is also a command-line flag `--<name-with-dashes>`.

    kind: the Python type a value must have (bool, int, float, str); inferred from a non-None default.
    choices: the accepted strings. minimum / maximum / positive: bounds checked when the options object is made.
    short: a one-letter alias such as "-n".
    """
    kind = kind or (type(default) if default is not None else str)
    meta = {"flag": True, "help": help, "kind": kind, "choices": choices, "minimum": minimum, "maximum": maximum,
            "positive": positive, "short": short}
    return dataclasses.field(default=default, metadata=meta)


def context(default=None):
    """A field the caller fills (not a flag): e.g. the schedule a denoiser precomputes for, or the run's seed."""
    return dataclasses.field(default=default, metadata={"flag": False}, compare=False)


def flag_name(name: str) -> str:
    """The flag of a field: `picard_tol` is --picard-tol; a trailing underscore (`class_`, a Python keyword) drops."""
    return "--" + name.rstrip("_").replace("_", "-")


def flag_fields(cls) -> list[dataclasses.Field]:
    """The fields of an options class that are command-line flags, in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag")]


def type_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({bool: "true/false", int: "a whole number", float: "a number", str: "text"}.get(k, k.__name__)
                       for k in kinds)


def coerce(name: str, value, kind, *, source: str = "option"):
    """`value` as `kind`, refusing what a user would not mean (2.5 for a whole number, "ten" for a number)."""
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if k is bool and isinstance(value, bool):
            return value
        if k is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if k is float and isinstance(value, _NUMBER) and not isinstance(value, bool):
            return float(value)
        if k is str and isinstance(value, str):
            return value
        if k is tuple and isinstance(value, (list, tuple)):
            return tuple(value)
    raise UsageError(f"{source} {flag_name(name) if source == 'option' else repr(name)} needs {type_name(kind)} "
                     f"(got {value!r}).")


def check_field(f: dataclasses.Field, value) -> None:
    """The bounds and choices an option field declares."""
    if value is None:
        return
    m = f.metadata
    if m.get("choices") and value not in m["choices"]:
        raise UsageError(f"{flag_name(f.name)} '{value}' is not one of: {', '.join(m['choices'])}.")
    if m.get("positive") and not value > 0:
        raise UsageError(f"{flag_name(f.name)} must be positive (got {value}).")
    if m.get("minimum") is not None and value < m["minimum"]:
        raise UsageError(f"{flag_name(f.name)} must be at least {m['minimum']} (got {value}).")
    if m.get("maximum") is not None and value > m["maximum"]:
        raise UsageError(f"{flag_name(f.name)} must be at most {m['maximum']} (got {value}).")


class Options:
    """Mixin for frozen option dataclasses: checks every flag field when made (`__post_init__`)."""

    def __post_init__(self):
        for f in flag_fields(type(self)):
            value = coerce(f.name, getattr(self, f.name), f.metadata["kind"])
            check_field(f, value)
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_settings(cls, settings: dict, **context_values):
        """The options object from a settings dict (missing or None keys take the field's default)."""
        given = {f.name: settings[f.name] for f in flag_fields(cls) if settings.get(f.name) is not None}
        return cls(**given, **context_values)

    def flag_values(self) -> dict[str, Any]:
        """{field name: value} of the flag fields, for --json output and samples.h5 attributes."""
        return {f.name: getattr(self, f.name) for f in flag_fields(type(self))}


@dataclasses.dataclass(frozen=True)
class NoOptions(Options):
    """A component with no options of its own."""
