"""Reference PF-ODE solutions with diffrax's adaptive Runge-Kutta (for tests and benchmarks; run under float64)."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

SOLVERS = {"dopri8": diffrax.Dopri8, "dopri5": diffrax.Dopri5, "tsit5": diffrax.Tsit5}


def solve_pf_ode(denoiser, x, sigma_start, sigma_end, *, rtol=1e-12, atol=1e-12, solver="dopri8",
                 max_steps=100_000):
    """x(sigma_end) from x(sigma_start) on dx/du = x - D(x, e^u), u = log sigma, by an adaptive diffrax solve."""

    def field(u, y, args):
        return y - denoiser(y, jnp.broadcast_to(jnp.exp(u), (y.shape[0],)).astype(y.dtype)).astype(y.dtype)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), SOLVERS[solver](), t0=jnp.log(jnp.asarray(sigma_start, x.dtype)),
        t1=jnp.log(jnp.asarray(sigma_end, x.dtype)), dt0=None, y0=x,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
    )
    return sol.ys[-1], sol.stats["num_steps"]


def reference_sample(denoiser, x_T, sigmas, **kw):
    """What an ODE solver on `sigmas` converges to: the exact flow to the last nonzero sigma, then the final denoise."""
    s_max = float(sigmas[0])
    s_min = float(sigmas[-2] if sigmas[-1] == 0 else sigmas[-1])
    x, steps = jax.jit(lambda y: solve_pf_ode(denoiser, y, s_max, s_min, **kw))(x_T)
    if sigmas[-1] == 0:
        x = denoiser(x, jnp.full((x.shape[0],), s_min, x.dtype))
    return x, steps
