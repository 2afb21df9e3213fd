"""The batched sampling loop: per-sample noise from (seed, i), fixed-size jitted batches, non-finite detection.

Sample i starts from x_T = sigma_max * eps_i with eps_i drawn from fold_in(PRNGKey(seed), i), and its solver noise
comes from its own key, so a sample is the same whatever the solver batch, batch size, shard or device count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.errors import DiffcliError


@dataclass
class SampleRun:
    samples: np.ndarray  # [n, ...] float32, data space
    noise: np.ndarray  # [n, ...] the initial state x_T of each sample
    ids: np.ndarray  # [n] sample indices (seed-relative)
    nfe: int
    rounds: int
    seconds: float
    aux: dict = field(default_factory=dict)


def run_key(seed: int) -> jax.Array:
    """The run's key from a seed in [0, 2^64): its two 32-bit words (equal to PRNGKey(seed) below 2^32)."""
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise DiffcliError(f"the seed must lie in [0, 2^64) (got {seed}).")
    return jnp.array([seed >> 32, seed & 0xFFFFFFFF], dtype=jnp.uint32)


def sample_key(seed: int, i):
    return jax.random.fold_in(run_key(seed), i)


def initial_noise(seed: int, ids, shape) -> jax.Array:
    """Unit normal eps_i [len(ids), *shape], a function of (seed, i) alone."""
    ids = jnp.asarray(ids, jnp.uint32)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(sample_key(seed, i), 0), tuple(shape)))(ids)


def solver_keys(seed: int, ids) -> jax.Array:
    """One key per sample for the solver's and denoiser's randomness."""
    ids = jnp.asarray(ids, jnp.uint32)
    return jax.vmap(lambda i: jax.random.fold_in(sample_key(seed, i), 1))(ids)


def shard_ids(n: int, shard: tuple[int, int] | None) -> np.ndarray:
    """Sample ids of shard (I, N): i = I mod N of the full run of n samples."""
    if shard is None:
        return np.arange(n)
    i, count = shard
    return np.arange(i, n, count)


def on_cluster(denoiser, *arrays):
    """Multi-process runs take every jit input as a global array: replicate them over the denoiser's index mesh."""
    mesh = getattr(denoiser, "mesh", None)
    if mesh is None or jax.process_count() == 1:
        return arrays
    from diffcli.parallel.denoiser import as_replicated

    return tuple(as_replicated(mesh, np.asarray(a)) for a in arrays)


def to_host(x) -> np.ndarray:
    """A (possibly multi-process, replicated) array as NumPy on this host."""
    return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)


@eqx.filter_jit
def _run_batch(solver, options, denoiser, x_t, sigmas, keys):
    return solver(denoiser, x_t, sigmas, key=keys, **options)


def check_finished(aux, sigmas) -> None:
    """A solver that stopped short of the grid's end (collocation after its cap on windows) is one sentence, never a
    sample handed on as if it were finished."""
    if not isinstance(aux, dict) or "finished" not in aux or np.all(to_host(aux["finished"])):
        return
    reached = float(np.max(to_host(aux["sigma_reached"]))) if "sigma_reached" in aux else float("nan")
    last = float(np.min(np.asarray(sigmas)[np.asarray(sigmas) > 0]))
    raise DiffcliError(f"collocation stopped at sigma={reached:.4g}, short of sigma={last:.4g}, at its cap on "
                       "windows (the denoiser is rougher in sigma than --colloc-tol allows); loosen --colloc-tol, fix "
                       "the windows with --colloc-windows, or use another solver.")


def generate(*, denoiser, solver, sigmas, shape, ids, seed: int, batch_size: int, solver_options=None,
             progress=None, run_size: int | None = None) -> SampleRun:
    """Run `solver` over the samples `ids` in batches of `batch_size` (the last batch padded, one compile).

    `solver_options`: the solver's own options (the flag values of its options class). `run_size`: the number of
    samples of the whole run when `ids` is one shard of it; batches then keep the whole run's shape, so a shard runs
    the very program the one-shot run runs and merged shards equal it bit for bit.
    """
    options = dict(solver_options or {})
    sigmas_j = jnp.asarray(sigmas, jnp.float32)
    ids = np.asarray(ids)
    batch_size = max(1, min(batch_size, len(ids) if run_size is None else run_size))
    outs, starts = [], []
    nfe = rounds = 0
    t0 = time.perf_counter()
    for lo in range(0, len(ids), batch_size):
        part = ids[lo:lo + batch_size]
        padded = np.concatenate([part, np.full(batch_size - len(part), part[-1])])
        x_t = sigmas_j[0] * initial_noise(seed, padded, shape)
        res = _run_batch(solver, options, denoiser, *on_cluster(denoiser, x_t, sigmas_j, solver_keys(seed, padded)))
        bad = int(to_host(res.aux.get("nonfinite_step", -1))) if isinstance(res.aux, dict) else -1
        x0 = to_host(res.x0)[: len(part)]
        if bad >= 0 or not np.all(np.isfinite(x0)):
            step = bad if bad >= 0 else len(sigmas) - 2
            raise DiffcliError(
                f"sampling produced NaN or inf at step {step} (sigma={float(sigmas[step]):.4g}); "
                "try more steps, another solver or another schedule."
            )
        check_finished(res.aux, sigmas)
        outs.append(x0)
        starts.append(np.asarray(x_t)[: len(part)])
        nfe, rounds = max(nfe, int(np.max(to_host(res.nfe)))), max(rounds, int(np.max(to_host(res.rounds))))
        if progress is not None:
            progress(len(part))
    return SampleRun(
        samples=np.concatenate(outs).astype(np.float32),
        noise=np.concatenate(starts).astype(np.float32),
        ids=ids,
        nfe=nfe,
        rounds=rounds,
        seconds=time.perf_counter() - t0,
    )
