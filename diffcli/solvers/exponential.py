"""Exponential-integrator collocation weights: the kernel e^{h (c - tau)} integrated exactly against the Lagrange basis.

On a window of length h in u = log sigma with Chebyshev nodes c_i in (0, 1) and Lagrange basis l_j, the PF-ODE
dx/du = x - D gives x(u0 + h c) = e^{h c} y0 - sum_j A_j(c; h) D_j with

    A_j(c; h) = h int_0^c e^{h (c - tau)} l_j(tau) dtau.

The weights depend on h, so they are evaluated inside the compiled solver from h-free float64 tables: a Gauss-Legendre
rule on [0, c] with enough points that the rule is exact to round-off for |h| <= H_MAX (the integrand is a polynomial
of degree D - 1 times an exponential). Every term is a positive exponential times a tabled number, so the evaluation
loses no digits to cancellation in float32. The identities are checked in float64 when a table is built: against the
closed form int_0^c e^{h (c - tau)} tau^p dtau = p! c^{p+1} sum_k (h c)^k / (k + p + 1)!, and h -> 0 gives the plain
collocation matrix. Derivation: docs/collocation.md.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from numpy.polynomial import chebyshev as cheb
from numpy.polynomial import legendre

from diffcli.solvers.chebyshev import chebyshev_table, lagrange_coefficients

H_MAX = 6.0  # longest window in log-sigma the tables are exact for (a factor e^6 ~ 400 in sigma)
EXTRA_POINTS = 24  # Gauss points beyond the polynomial part: (H_MAX)^(2 * 24) / (2 * 24)! < 1e-20


@dataclass(frozen=True)
class ExponentialTable:
    nodes: np.ndarray  # [D] the Chebyshev nodes c_i on [0, 1]
    points: np.ndarray  # [Q] Gauss-Legendre points t_q on [0, 1]
    quad: np.ndarray  # [Q] their weights
    basis: np.ndarray  # [D + 1, Q, D]: l_j(c_i t_q) for rows i < D, l_j(t_q) in row D (the window's end)
    ends: np.ndarray  # [D + 1]: c_i and 1


def lagrange_values(nodes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """l_j(at) [..., D] for the Lagrange basis on `nodes` (Chebyshev first-kind points on [0, 1]), in float64."""
    coef = lagrange_coefficients(2 * nodes - 1)
    return cheb.chebvander(2 * at - 1, nodes.shape[0] - 1) @ coef


def kernel_weights_np(tab: ExponentialTable, h: float) -> np.ndarray:
    """The weights [D + 1, D] (rows: nodes, then the end) in float64, for checks."""
    scale = np.exp(h * tab.ends[:, None] * (1 - tab.points[None, :]))  # [D + 1, Q]
    return h * tab.ends[:, None] * np.einsum("pq,q,pqj->pj", scale, tab.quad, tab.basis)


def monomial_integral(c: float, h: float, p: int) -> float:
    """int_0^c h e^{h (c - tau)} tau^p dtau by its series (exact to round-off for |h c| <= H_MAX in float64)."""
    total, k, term = 0.0, 0, 1.0
    while True:
        add = term / math.factorial(k + p + 1)
        total += add
        if k > 20 and abs(add) < 1e-18 * max(abs(total), 1e-300):
            break
        k += 1
        term *= h * c
    return h * math.factorial(p) * c ** (p + 1) * total


def check_exponential_table(tab: ExponentialTable, tol: float) -> None:
    """Raise unless the weights integrate tau^p times the kernel exactly (p < D) for several h, and tend to h times
    the plain collocation matrix as h -> 0."""
    n = tab.nodes.shape[0]
    for h in (-H_MAX, -2.5, -0.3, 0.7):
        w = kernel_weights_np(tab, h)
        for p in range(n):
            want = np.array([monomial_integral(c, h, p) for c in tab.ends])
            if not np.allclose(w @ tab.nodes**p, want, rtol=0, atol=tol * max(1.0, abs(h))):
                raise ArithmeticError(f"exponential weights fail on degree {p} with {n} nodes at h = {h}")
    plain = chebyshev_table(n)
    h = 1e-15  # the deviation from the plain table is O(h)
    w = kernel_weights_np(tab, h) / h
    if not (np.allclose(w[:n], plain.matrix, rtol=0, atol=tol) and np.allclose(w[n], plain.weights, rtol=0,
                                                                                   atol=tol)):
        raise ArithmeticError("exponential weights do not tend to the plain collocation table as h -> 0")


@functools.lru_cache(maxsize=32)
def exponential_table(n: int) -> ExponentialTable:
    """The checked float64 exponential-integrator table for n Chebyshev nodes."""
    nodes = chebyshev_table(n).nodes
    x, g = legendre.leggauss((n + 1) // 2 + EXTRA_POINTS)
    points, quad = (x + 1) / 2, g / 2
    ends = np.concatenate([nodes, [1.0]])
    basis = lagrange_values(nodes, ends[:, None] * points[None, :])
    tab = ExponentialTable(nodes, points, quad, basis, ends)
    check_exponential_table(tab, tol=1e-12 * n * n)
    return tab


def kernel_weights(tab: ExponentialTable, h, dtype):
    """(A [D, D], w [D]) for a window of length h (a traced scalar, |h| <= H_MAX), in `dtype`:
    node states Y_i = e^{h c_i} y0 - sum_j A_ij D_j and the end state e^h y0 - sum_j w_j D_j."""
    ends = jnp.asarray(tab.ends, dtype)
    points = jnp.asarray(tab.points, dtype)
    scale = jnp.exp(h * ends[:, None] * (1 - points[None, :])) * jnp.asarray(tab.quad, dtype)
    full = h * ends[:, None] * jnp.einsum("pq,pqj->pj", scale, jnp.asarray(tab.basis, dtype))
    return full[:-1], full[-1]
