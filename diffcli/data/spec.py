"""Dataset specs: NAME or NAME:key=value,key=value, with typed parameter access and clear errors."""

from __future__ import annotations

from diffcli.errors import UsageError

MAX_RES = 1024  # the largest image side any reader resizes to (CelebA-HQ's full size)


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'shapes:res=32,n=1000' -> ('shapes', {'res': '32', 'n': '1000'})."""
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"dataset spec '{spec}' has a malformed parameter '{part}'; write key=value.")
        params[key.strip()] = value.strip()
    if not name:
        raise UsageError("an empty dataset spec was given; write NAME or NAME:key=value,....")
    return name, params


def check_params(name: str, params: dict[str, str], allowed) -> None:
    """Refuse parameters a dataset does not know."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise UsageError(
            f"dataset '{name}' has no parameter '{unknown[0]}'; "
            f"its parameters are: {', '.join(sorted(allowed)) or 'none'}."
        )


def int_param(params, key, default, *, minimum=None, maximum=None, choices=None) -> int:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"dataset parameter {key}={raw} is not a whole number.") from None
    if minimum is not None and value < minimum:
        raise UsageError(f"dataset parameter {key}={value} must be at least {minimum}.")
    if maximum is not None and value > maximum:
        raise UsageError(f"dataset parameter {key}={value} must be at most {maximum}.")
    if choices is not None and value not in choices:
        raise UsageError(f"dataset parameter {key}={value} must be one of {', '.join(map(str, choices))}.")
    return value


def float_param(params, key, default, *, positive=False) -> float:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"dataset parameter {key}={raw} is not a number.") from None
    if positive and not value > 0:
        raise UsageError(f"dataset parameter {key}={value} must be positive.")
    return value
