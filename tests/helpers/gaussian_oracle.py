"""Float64 closed forms for Gaussian data N(mu, S) in sigma-space: the exact denoiser, the exact PF-ODE flow, and the
exact law of the DDIM(eta)/DDPM sampler. Other test files may import it.

In the eigenbasis S = U diag(lam) U^T with c = U^T (x - mu):
  D(x, sigma) = mu + U diag(lam / (lam + sigma^2)) c,
  PF-ODE dc/dsigma = sigma c / (lam + sigma^2)  =>  c(s1) = c(s0) sqrt((lam + s1^2) / (lam + s0^2)).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers.base import AbstractDenoiser, flatten


@contextlib.contextmanager
def x64():
    """Float64 JAX inside the block only, restoring the previous setting."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


def random_gaussian(dim: int, seed: int = 0, lam_range=(0.05, 2.0)):
    """(mu, S) with eigenvalues spread log-uniformly over lam_range and a random rotation."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    lam = np.exp(np.linspace(np.log(lam_range[0]), np.log(lam_range[1]), dim))
    mu = 0.5 * rng.standard_normal(dim)
    return mu, (q * lam) @ q.T


class GaussianDenoiser(AbstractDenoiser):
    """Exact posterior mean for Gaussian data N(mu, S): an affine map for each sigma."""

    mu: jax.Array  # [D]
    basis: jax.Array  # [D, D], eigenvectors as columns
    lam: jax.Array  # [D]

    @classmethod
    def from_cov(cls, mu, cov):
        lam, basis = np.linalg.eigh(np.asarray(cov, np.float64))
        return cls(jnp.asarray(mu), jnp.asarray(basis), jnp.asarray(np.clip(lam, 0.0, None)))

    def __call__(self, x, sigma, *, key=None):
        flat = flatten(x)
        dt = flat.dtype
        sig = jnp.broadcast_to(jnp.asarray(sigma, dt), (flat.shape[0],))
        basis, lam, mu = self.basis.astype(dt), self.lam.astype(dt), self.mu.astype(dt)
        c = (flat - mu) @ basis
        gain = lam[None, :] / (lam[None, :] + sig[:, None] ** 2)
        return (mu + (gain * c) @ basis.T).reshape(x.shape)


def eig(mu, cov):
    lam, basis = np.linalg.eigh(np.asarray(cov, np.float64))
    return np.asarray(mu, np.float64), basis, np.clip(lam, 0.0, None)


def denoise(mu, cov, x, sigma):
    """NumPy float64 D(x, sigma) for rows x [B, D]."""
    mu, basis, lam = eig(mu, cov)
    c = (np.asarray(x, np.float64) - mu) @ basis
    return mu + (lam / (lam + sigma**2) * c) @ basis.T


def pf_ode_flow(mu, cov, x, s0: float, s1: float):
    """The exact PF-ODE map x(s0) -> x(s1) for rows x [B, D] (s1 = 0 gives the ODE's sample)."""
    mu, basis, lam = eig(mu, cov)
    c = (np.asarray(x, np.float64) - mu) @ basis
    return mu + (np.sqrt((lam + s1**2) / (lam + s0**2)) * c) @ basis.T


def ddim_law(mu, cov, sigmas, eta: float):
    """Exact Gaussian law (mean [D], cov [D, D]) of DDIM(eta) sampling from x_T = sigmas[0] * N(0, I).

    Each step is affine with Gaussian noise in the eigenbasis: c' = (g + r (1 - g)) c + n z with g = lam/(lam + s^2),
    r, n the DDIM(eta) coefficients, so mean and (diagonal) variance of c propagate exactly.
    """
    mu, basis, lam = eig(mu, cov)
    sig = np.asarray(sigmas, np.float64)
    m = -(mu @ basis)  # x_T has mean 0, so c = U^T (x - mu) starts at -U^T mu
    v = np.full_like(lam, sig[0] ** 2)
    for s, s_next in zip(sig[:-1], sig[1:], strict=True):
        n = eta * s_next * np.sqrt(max(1.0 - (s_next / s) ** 2, 0.0))
        r = np.sqrt(max(s_next**2 - n**2, 0.0)) / s
        g = lam / (lam + s**2)
        a = g + r * (1.0 - g)
        m, v = a * m, a * a * v + n * n
    return mu + basis @ m, (basis * v) @ basis.T


def karras_sigmas(steps: int, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """EDM grid (Karras et al. 2022, eq. 5) with a trailing 0, for tests that must not depend on other modules."""
    ramp = np.linspace(0.0, 1.0, steps)
    s = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.concatenate([s, [0.0]])
