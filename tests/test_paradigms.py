"""`--picard-rule paradigms` against a float64 transcription of the ParaDiGMS sampling loop (Shih et al. 2023).

The transcription below follows the published loop's structure: a buffer of every state in VP scaling, a window
[begin, end) of at most `parallel` steps, each round's noiseless scheduler steps (DDPM posterior mean, or DDIM with
eta 0) summed from the window's start with the pre-drawn noise, the error ratio ||dy||^2 / (dim var) against tol^2
padded past the window, the move to the first failing point, and copies of the window's last state for new points.
It is written in the alphas of the DDPM/DDIM papers, not in diffcli's sigma-space maps, so it checks those too.
"""

import jax
import numpy as np
import pytest

from diffcli.denoisers.gmm import GMMDenoiser
from diffcli.solvers.base import per_sample_normal
from diffcli.solvers.options import PicardOptions
from diffcli.solvers.picard import initial_state, make_plan, picard_step
from tests.helpers.gaussian_oracle import karras_sigmas, x64


def mixture(dim=8):
    rng = np.random.default_rng(0)
    means = rng.standard_normal((4, dim))
    means *= 2.0 / np.linalg.norm(means, axis=1, keepdims=True)
    return GMMDenoiser.from_arrays(means, np.full(4, 0.4), np.full(4, 0.25), dtype=np.float64)


def official_loop(den, x_t, sig, keys, ode, tol, parallel):
    """(final sample in sigma-space, pass count, flop count, the window starts after each pass)."""
    k = sig.shape[0] - 1
    abar = 1.0 / (1.0 + sig**2)  # alpha-bar of each grid point; 1 at sigma = 0
    dim = x_t[0].size

    def variance(j):  # DDIM's sigma_t^2 at eta = 1 (the DDPM posterior variance) of step j
        a_t, a_prev = abar[j], abar[j + 1]
        return (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)

    denoise = jax.jit(lambda x, s: den(x.reshape((-1,) + x.shape[2:]), s.repeat(x.shape[1])).reshape(x.shape))

    def step_no_noise(y, j):  # one batched call for the block's steps j [n], as the loop's one network pass
        a_t, a_prev = abar[j][:, None, None], abar[j + 1][:, None, None]
        x0 = np.asarray(denoise(y / np.sqrt(a_t), sig[j]))
        if ode:  # DDIM, eta 0
            eps = (y - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
            return np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
        alpha = a_t / a_prev  # DDPM posterior mean, Ho et al. eq. 7
        return np.sqrt(a_prev) * (1 - alpha) / (1 - a_t) * x0 + np.sqrt(alpha) * (1 - a_prev) / (1 - a_t) * y

    parallel = min(parallel, k)
    buffer = np.stack([np.sqrt(abar[0]) * np.asarray(x_t)] * (k + 1))
    noise = np.stack([np.sqrt(variance(j)) * np.asarray(per_sample_normal(keys, j, x_t.shape[1:], np.float64))
                      for j in range(k)])
    with np.errstate(divide="ignore"):
        inverse_variance = 1.0 / np.array([variance(j) for j in range(k)] + [0.0]) / dim
    begin, end, passes, flops, starts = 0, parallel, 0, 0, []
    while begin < k:
        n = end - begin
        block = buffer[begin:end]
        stepped = step_no_noise(block, np.arange(begin, end))
        cumulative_noise = 0.0 if ode else np.cumsum(noise[begin:end], axis=0)
        new = buffer[begin][None] + np.cumsum(stepped - block, axis=0) + cumulative_noise
        err = np.sum((new - buffer[begin + 1:end + 1]).reshape(n, x_t.shape[0], -1) ** 2, axis=-1)
        with np.errstate(invalid="ignore"):
            ratio = err * inverse_variance[begin + 1:end + 1, None]
            ratio = np.concatenate([ratio, np.full((1, x_t.shape[0]), 1e9)])
            failing = np.max(ratio > tol**2, axis=1)  # NaN (0 * inf) compares false: an exact zero passes
        ind = int(np.argmax(failing))
        new_begin = begin + min(1 + ind, parallel)
        new_end = min(new_begin + parallel, k)
        buffer[begin + 1:end + 1] = new
        buffer[end:new_end + 1] = buffer[end][None]
        begin, end = new_begin, new_end
        passes, flops = passes + 1, flops + n
        starts.append(min(begin, k))
    return buffer[-1] / np.sqrt(abar[-1]), passes, flops, starts


def diffcli_loop(den, x_t, sig, keys, mode, tol, window):
    """diffcli's paradigms rule stepped round by round: (final sample, rounds, evaluations, points, starts)."""
    k = sig.shape[0] - 1
    plan = make_plan(PicardOptions(picard_rule="paradigms", picard_tol=tol, picard_window=window, picard_mode=mode),
                     k, x_t[0].size)
    step = jax.jit(lambda s: picard_step(den, s, plan, sig, keys))
    state, starts = initial_state(x_t, plan, sig), []
    while int(state.start) < k:
        state = step(state)
        starts.append(int(state.start))
    return np.asarray(state.xs[0]), int(state.rounds), int(state.evals), int(state.points), starts


@pytest.mark.parametrize("mode,tol,window,steps", [
    ("sde", 1e-2, 7, 40), ("ode", 1e-2, 16, 60),
    pytest.param("sde", 0.1, 16, 60, marks=pytest.mark.slow),
    pytest.param("ode", 1e-3, 64, 50, marks=pytest.mark.slow)])
def test_same_rounds_and_strides_as_the_official_loop(mode, tol, window, steps):
    with x64():
        import jax.numpy as jnp

        den = mixture()
        sig = jnp.asarray(karras_sigmas(steps))
        x_t = sig[0] * jax.random.normal(jax.random.PRNGKey(3), (3, 8), jnp.float64)
        keys = jax.random.split(jax.random.PRNGKey(4), 3)
        want, passes, flops, want_starts = official_loop(den, x_t, np.asarray(sig), keys, mode == "ode", tol, window)
        got, rounds, evals, points, starts = diffcli_loop(den, x_t, sig, keys, mode, tol, window)
    assert starts == want_starts and rounds == passes and points == flops, (starts, want_starts)
    assert flops <= evals < 2 * flops
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
    assert passes < steps  # the tolerance did stop rounds early
