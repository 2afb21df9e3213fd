"""Networks from outside as sigma-space denoisers (k-diffusion's habit): one wrapper for x0, eps, v and EDM outputs,
conditioned on sigma (VE) or on the timestep of a discrete-time VP model (linear or cosine betas).

A VP network sees x_vp = x / sqrt(1 + sigma^2) and the fractional timestep whose sigma is `sigma` (log sigma is
linear between the training timesteps, as in noise.ddpm_sigma_to_t), or the nearest timestep. The README section
"Use diffcli's solvers with your own model" says what each flag means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli import noise
from diffcli.denoisers.base import AbstractDenoiser
from diffcli.errors import DiffcliError, UsageError
from diffcli.options import flag_name as flag

MODEL_OUTPUTS = ("x0", "eps", "v", "edm")
MODEL_NOISES = ("ve", "vp-linear", "vp-cosine")
TIMESTEP_MODES = ("fractional", "nearest")
COSINE_MAX_BETA = 0.999  # the clip of Nichol & Dhariwal's discrete cosine betas (diffusers' squaredcos_cap_v2)


@dataclass(frozen=True)
class Parameterisation:
    """How a network is parameterised; the field names are the option names (--model-output, ...)."""

    model_output: str = "eps"
    model_noise: str = "vp-linear"
    model_timesteps: int = noise.DDPM_STEPS
    model_timestep_mode: str = "fractional"
    model_sigma_data: float = 0.5
    model_beta_start: float = noise.DDPM_BETA_START
    model_beta_end: float = noise.DDPM_BETA_END

    def __post_init__(self):
        checks = {"model_output": MODEL_OUTPUTS, "model_noise": MODEL_NOISES, "model_timestep_mode": TIMESTEP_MODES}
        for name, choices in checks.items():
            if getattr(self, name) not in choices:
                raise UsageError(f"{flag(name)} '{getattr(self, name)}' is not one of: {', '.join(choices)}.")
        if int(self.model_timesteps) != self.model_timesteps or self.model_timesteps < 2:
            raise UsageError(f"--model-timesteps must be a whole number of at least 2 (got {self.model_timesteps}).")
        if not self.model_sigma_data > 0:
            raise UsageError(f"--model-sigma-data must be positive (got {self.model_sigma_data}).")
        if not 0 < self.model_beta_start <= self.model_beta_end < 1:
            raise UsageError("--model-beta-start and --model-beta-end need 0 < start <= end < 1 "
                             f"(got {self.model_beta_start}, {self.model_beta_end}).")
        if self.model_output == "edm" and self.model_noise != "ve":
            raise UsageError("--model-output edm brings its own conditioning (c_noise = ln(sigma)/4) and needs "
                             f"--model-noise ve, not {self.model_noise}.")

    @property
    def discrete(self) -> bool:
        return self.model_noise.startswith("vp-")

    def describe(self) -> str:
        if not self.discrete:
            return f"{self.model_output} on sigma"
        return (f"{self.model_output} on {self.model_noise} ({self.model_timesteps} timesteps, "
                f"{self.model_timestep_mode})")


PARAMETERISATION_KEYS = tuple(f.name for f in fields(Parameterisation))


def resolve_parameterisation(given: dict, declared: dict | None = None, *, source: str = "the model"
                             ) -> Parameterisation:
    """Flags the user gave (`given`, None = not given) over the model's own declaration over the defaults.

    A flag that contradicts the declaration is one sentence: the declaration is a fact about the network.
    """
    declared = {k: v for k, v in (declared or {}).items() if v is not None}
    unknown = sorted(set(declared) - set(PARAMETERISATION_KEYS))
    if unknown:
        raise DiffcliError(f"{source} declares unknown keys {', '.join(unknown)}; "
                           f"known: {', '.join(PARAMETERISATION_KEYS)}.")
    values = {}
    for name in PARAMETERISATION_KEYS:
        mine, theirs = given.get(name), declared.get(name)
        if mine is not None and theirs is not None and not _same(mine, theirs):
            raise UsageError(f"{flag(name)} {mine} contradicts {source}, which declares {theirs}; "
                             "drop the flag or change the model's declaration.")
        if mine is not None or theirs is not None:
            values[name] = mine if mine is not None else theirs
    try:
        return Parameterisation(**values)
    except TypeError as exc:
        raise DiffcliError(f"{source} declares a parameterisation diffcli cannot read ({exc}).") from None


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0.0))
    return a == b


# --- the timestep tables of discrete-time VP models --------------------------------------------------------------

def vp_alpha_bar(p: Parameterisation) -> np.ndarray:
    """abar_t, t = 0 .. T-1, float64: linear betas (noise.ddpm_alpha_bar), or the discrete cosine schedule of
    Nichol & Dhariwal 2021 (beta_t = min(1 - abar((t+1)/T) / abar(t/T), 0.999) with the continuous abar of
    noise.cosine_t_to_sigma), as DDPM/diffusers schedulers index them."""
    if p.model_noise == "vp-linear":
        return np.asarray(noise.ddpm_alpha_bar(p.model_beta_start, p.model_beta_end, p.model_timesteps))
    if p.model_noise == "vp-cosine":
        grid = np.arange(p.model_timesteps + 1, dtype=np.float64) / p.model_timesteps
        abar_c = noise.alpha_bar_from_sigma(noise.cosine_t_to_sigma(grid))
        betas = np.minimum(1.0 - abar_c[1:] / abar_c[:-1], COSINE_MAX_BETA)
        return np.cumprod(1.0 - betas)
    raise ValueError(f"{p.model_noise} has no timestep table")


def vp_sigmas(p: Parameterisation) -> np.ndarray:
    """sigma_t = sqrt((1 - abar_t) / abar_t), increasing in t (float64)."""
    return noise.sigma_from_alpha_bar(vp_alpha_bar(p))


def sigma_to_timestep(sigma, log_sigmas, *, nearest: bool = False):
    """JAX form of noise.ddpm_sigma_to_t for any table: the fractional timestep, linear in log sigma between the
    table's entries and clamped to [0, T-1], or the index of the nearest entry in log sigma."""
    ls = jnp.log(sigma)
    if nearest:
        return jnp.argmin(jnp.abs(ls[..., None] - log_sigmas), axis=-1).astype(sigma.dtype)
    return jnp.interp(ls, log_sigmas, jnp.arange(log_sigmas.shape[0], dtype=log_sigmas.dtype)).astype(sigma.dtype)


def timestep_to_sigma(t, log_sigmas):
    """JAX form of noise.ddpm_t_to_sigma for any table (log sigma linear between integer timesteps)."""
    return jnp.exp(jnp.interp(t, jnp.arange(log_sigmas.shape[0], dtype=log_sigmas.dtype), log_sigmas))


# --- output conversions (JAX forms of noise.denoiser_from_eps / denoiser_from_v) ------------------------------------

def edm_coefficients(sigma, sigma_data):
    """(c_skip, c_out, c_in, c_noise) of EDM (Karras et al. 2022, Table 1)."""
    s2, d2 = sigma * sigma, sigma_data * sigma_data
    root = jnp.sqrt(s2 + d2)
    return d2 / (s2 + d2), sigma * sigma_data / root, 1.0 / root, jnp.log(sigma) / 4.0


def to_denoised(kind: str, x, out, sigma, sigma_data=0.5):
    """x0_hat in sigma-space from a network output of `kind`; sigma broadcast against x."""
    if kind == "x0":
        return out
    if kind == "eps":
        return x - sigma * out  # x = x0 + sigma eps
    if kind == "v":
        alpha = jax.lax.rsqrt(1.0 + sigma * sigma)  # x0 = sqrt(abar) x_vp - sqrt(1 - abar) v
        return alpha * alpha * x - sigma * alpha * out
    if kind == "edm":
        c_skip, c_out, _, _ = edm_coefficients(sigma, sigma_data)
        return c_skip * x + c_out * out
    raise ValueError(kind)


# --- the wrapper --------------------------------------------------------------------------------------------------

class Static(eqx.Module):
    """A plain callable (a function, a host-callback bridge) kept out of the pytree, so any jit accepts it."""

    fn: Callable = eqx.field(static=True)

    def __call__(self, *args):
        return self.fn(*args)


class ModelDenoiser(AbstractDenoiser):
    """D(x, sigma) from a network `net(x_in, cond) -> output` of any parameterisation; at sigma = 0 it returns x.

    `net` is an equinox module (its arrays are jit inputs) or a plain callable kept static. `log_sigmas` is the VP
    model's timestep table (None for sigma-conditioned networks).
    """

    net: Any
    log_sigmas: jax.Array | None
    param: Parameterisation = eqx.field(static=True)
    source: str = eqx.field(static=True, default="the model")

    @classmethod
    def wrap(cls, net, param: Parameterisation, *, source: str = "the model") -> ModelDenoiser:
        if not isinstance(net, eqx.Module):
            net = Static(net)
        table = jnp.asarray(np.log(vp_sigmas(param))) if param.discrete else None
        return cls(net, table, param, source)

    def network_inputs(self, x, sigma):
        """(x_in, cond) the network sees for a batch x [B, ...] at sigma [B] > 0."""
        p = self.param
        bshape = (-1,) + (1,) * (x.ndim - 1)
        if p.model_output == "edm":
            _, _, c_in, c_noise = edm_coefficients(sigma, jnp.asarray(p.model_sigma_data, x.dtype))
            return x * c_in.reshape(bshape), c_noise
        if p.discrete:
            t = sigma_to_timestep(sigma, self.log_sigmas.astype(x.dtype), nearest=p.model_timestep_mode == "nearest")
            return x * jax.lax.rsqrt(1.0 + sigma * sigma).reshape(bshape), t
        return x, sigma

    def __call__(self, x, sigma, *, key=None):
        s = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
        positive = s > 0
        safe = jnp.where(positive, s, jnp.ones_like(s))  # the output is not used at sigma = 0 (ln 0 would be nan)
        x_in, cond = self.network_inputs(x, safe)
        out = self.net(x_in, cond)
        if getattr(out, "shape", None) != x.shape:
            raise DiffcliError(f"{self.source} returned an output of shape {tuple(getattr(out, 'shape', ()))} for "
                               f"a batch of shape {tuple(x.shape)}; it must return the batch's shape.")
        bshape = (-1,) + (1,) * (x.ndim - 1)
        d = to_denoised(self.param.model_output, x, out.astype(x.dtype), safe.reshape(bshape),
                        jnp.asarray(self.param.model_sigma_data, x.dtype))
        return jnp.where(positive.reshape(bshape), d, x)

    def recorded(self) -> dict:
        """The resolved parameterisation (flags over the model's declaration over defaults), one key per flag,
        for the settings a run records."""
        return asdict(self.param)


def model_record(denoiser) -> dict:
    """The settings a denoiser resolved for itself ({} for most): a wrapped network's parameterisation, whose
    unflagged values came from the model's own declaration."""
    recorded = getattr(denoiser, "recorded", None)
    return recorded() if callable(recorded) else {}


def check_on_batch(denoiser: ModelDenoiser, shape: tuple[int, ...]) -> None:
    """Trace the denoiser once on a batch of two samples of `shape` (no computation): a model that is not
    JAX-traceable, fails, or returns the wrong shape is one sentence."""
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    s = jax.ShapeDtypeStruct((2,), jnp.float32)
    try:
        out = eqx.filter_eval_shape(lambda d, a, b: d(a, b), denoiser, x, s)
    except DiffcliError:
        raise
    except Exception as exc:  # the user's code may raise anything
        raise DiffcliError(f"{denoiser.source} failed on a batch of shape {(2, *shape)}: "
                           f"{type(exc).__name__}: {first_line(exc)}.") from None
    if out.shape != (2, *shape):
        raise DiffcliError(f"{denoiser.source} returned shape {out.shape} for a batch of shape {(2, *shape)}.")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".")
