"""Load a model factory named `FILE.py:FACTORY` or `package.module:FACTORY`, call it, and read what it returns.

The factory is called with no arguments, or with the data shape (a tuple, one sample's shape) when it takes one
argument. It returns the network, or the network and its parameterisation:
  - `f`                                     (the parameterisation then comes from flags and defaults)
  - `{"apply": f, "model_output": "eps", "model_noise": "vp-linear", "model_timesteps": 1000, ...}`
  - `(f, "eps")`, `(f, "eps", "vp-linear")`, `(f, "eps", "vp-linear", 1000)` or `(f, {...})`.
Keys may drop their `model_` prefix ("output", "noise", "timesteps", ...). Anything wrong is one sentence.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys

from diffcli.errors import DiffcliError, UsageError
from diffcli.models.wrappers import PARAMETERISATION_KEYS, first_line

TUPLE_ORDER = ("model_output", "model_noise", "model_timesteps")
NETWORK_KEYS = ("apply", "model", "module", "net")


def split_spec(spec: str | None, *, denoiser: str) -> tuple[str, str]:
    """'path/to/file.py:make' or 'package.module:make' -> (file or module, factory name)."""
    if not spec:
        raise UsageError(f"the {denoiser} denoiser needs --model FILE.py:FACTORY or --model package.module:FACTORY.")
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise UsageError(f"--model '{spec}' is not FILE.py:FACTORY or package.module:FACTORY.")
    return where, name


def load_module(where: str):
    """A Python file (by path) or an importable module (by dotted name); failures are one sentence."""
    is_file = where.endswith(".py") or os.sep in where or "/" in where
    if is_file:
        path = os.path.abspath(os.path.expanduser(where))
        if not os.path.isfile(path):
            raise DiffcliError(f"model file '{where}' does not exist.")
        name = "diffcli_model_" + hashlib.sha256(path.encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise DiffcliError(f"model file '{where}' cannot be loaded as Python.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise DiffcliError(f"model file '{where}' failed to load: "
                               f"{type(exc).__name__}: {first_line(exc)}.") from None
        return module
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name and where.startswith(exc.name):
            raise DiffcliError(f"model module '{where}' cannot be found "
                               "(no such file or importable module).") from None
        raise DiffcliError(f"model module '{where}' failed to import: "
                           f"{type(exc).__name__}: {first_line(exc)}.") from None
    except Exception as exc:
        raise DiffcliError(f"model module '{where}' failed to import: "
                           f"{type(exc).__name__}: {first_line(exc)}.") from None


def call_factory(spec: str, shape: tuple[int, ...], *, denoiser: str):
    """Load and call the factory `spec` names: what it returned."""
    where, name = split_spec(spec, denoiser=denoiser)
    module = load_module(where)
    factory = getattr(module, name, None)
    if factory is None:
        public = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                        and getattr(v, "__module__", None) == module.__name__)
        known = f"; it defines: {', '.join(public)}" if public else ""
        raise DiffcliError(f"'{where}' has no factory '{name}'{known}.")
    if not callable(factory):
        raise DiffcliError(f"'{spec}' is not callable (a factory returning the network is needed).")
    args = (tuple(shape),) if takes_one_argument(factory) else ()
    try:
        return factory(*args)
    except Exception as exc:
        raise DiffcliError(f"the model factory '{spec}' raised {type(exc).__name__}: {first_line(exc)}.") from None


def takes_one_argument(factory) -> bool:
    """True when the factory needs one positional argument (the data shape); false when it needs none."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    required = [p for p in sig.parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) == 1


def split_returned(value, *, spec: str) -> tuple[object, dict]:
    """(network, declared parameterisation) from what a factory returned."""
    if isinstance(value, dict):
        found = [k for k in NETWORK_KEYS if k in value]
        if len(found) != 1:
            raise DiffcliError(f"the model factory '{spec}' returned a dict without its network under "
                               f"one of: {', '.join(NETWORK_KEYS)}.")
        net = value[found[0]]
        declared = normalise_keys({k: v for k, v in value.items() if k != found[0]}, spec=spec)
    elif isinstance(value, tuple):
        if not value:
            raise DiffcliError(f"the model factory '{spec}' returned an empty tuple.")
        net, rest = value[0], value[1:]
        if len(rest) == 1 and isinstance(rest[0], dict):
            declared = normalise_keys(rest[0], spec=spec)
        elif len(rest) <= len(TUPLE_ORDER):
            declared = dict(zip(TUPLE_ORDER, rest, strict=False))
        else:
            raise DiffcliError(f"the model factory '{spec}' returned a tuple of {len(value)}; expected "
                               "(network, output[, noise[, timesteps]]) or (network, dict).")
    else:
        net, declared = value, {}
    if not callable(net):
        raise DiffcliError(f"the model factory '{spec}' returned {type(net).__name__}, not a callable network.")
    return net, declared


def normalise_keys(declared: dict, *, spec: str) -> dict:
    out = {}
    for key, value in declared.items():
        name = key if key.startswith("model_") else "model_" + key
        if name not in PARAMETERISATION_KEYS:
            known = ", ".join(k.removeprefix("model_") for k in PARAMETERISATION_KEYS)
            raise DiffcliError(f"the model factory '{spec}' declares an unknown key '{key}'; known: {known}.")
        out[name] = value
    return out


def given_parameterisation(opts) -> dict:
    """The parameterisation flags the user gave (None where not given)."""
    return {k: getattr(opts, k, None) for k in PARAMETERISATION_KEYS}
