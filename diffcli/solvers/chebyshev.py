"""Chebyshev collocation tables as checked data: nodes, integration matrix A and end weights w on [0, 1].

Nodes are Chebyshev points of the first kind c_i = (1 - cos((2i - 1) pi / (2D))) / 2. With l_j the Lagrange basis on
them, A[i, j] = int_0^{c_i} l_j and w_j = int_0^1 l_j (Fejer's first rule). Everything is built in float64 in the
Chebyshev basis (l_j = sum_k C[k, j] T_k with C from the discrete orthogonality of T_k at these nodes), never by a
monomial fit, and the defining identities are checked when the table is built. On [0, h]: A(h) = h A(1), w(h) = h w(1).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev as cheb


@dataclass(frozen=True)
class CollocationTable:
    nodes: np.ndarray  # [D] ascending in (0, 1)
    matrix: np.ndarray  # [D, D]: A[i, j] = int_0^{nodes_i} l_j
    weights: np.ndarray  # [D]: w_j = int_0^1 l_j

    def scaled(self, h: float):
        """(nodes, A, w) on [0, h] (h may be negative: integration backwards)."""
        return h * self.nodes, h * self.matrix, h * self.weights


def lagrange_coefficients(t: np.ndarray) -> np.ndarray:
    """C [D, D] with l_j(t) = sum_k C[k, j] T_k(t) at the first-kind Chebyshev points t (inverse of chebvander)."""
    n = t.shape[0]
    c = (2.0 / n) * cheb.chebvander(t, n - 1).T
    c[0] *= 0.5
    return c


def antiderivatives(points: np.ndarray, n: int) -> np.ndarray:
    """I [P, n] with I[p, k] = int_{-1}^{points_p} T_k."""
    out = np.empty((points.shape[0], n))
    for k in range(n):
        out[:, k] = cheb.chebval(points, cheb.chebint(np.eye(n)[k], lbnd=-1))
    return out


def check_table(tab: CollocationTable, tol: float) -> None:
    """Raise unless A and w integrate every polynomial of degree < D exactly and w is A's row for the end node."""
    n = tab.nodes.shape[0]
    c = tab.nodes
    for p in range(n):
        if not np.allclose(tab.matrix @ c**p, c ** (p + 1) / (p + 1), rtol=0, atol=tol):
            raise ArithmeticError(f"collocation matrix fails to integrate degree {p} with {n} nodes")
        if abs(tab.weights @ c**p - 1.0 / (p + 1)) > tol:
            raise ArithmeticError(f"collocation end weights fail on degree {p} with {n} nodes")
    end_row = 0.5 * antiderivatives(np.array([1.0]), n) @ lagrange_coefficients(2 * c - 1)
    if not np.allclose(end_row[0], tab.weights, rtol=0, atol=tol):
        raise ArithmeticError("collocation end weights differ from the integration row of the end node")
    h = -0.37  # A(h) = h A(1): the scaled table integrates polynomials on [0, h] too
    nodes_h, a_h, w_h = tab.scaled(h)
    p = n - 1
    if (not np.allclose(a_h @ nodes_h**p, nodes_h ** (p + 1) / (p + 1), rtol=0, atol=tol)
            or abs(w_h @ nodes_h**p - h ** (p + 1) / (p + 1)) > tol):
        raise ArithmeticError("scaled collocation table fails on [0, h]")


@functools.lru_cache(maxsize=32)
def chebyshev_table(n: int) -> CollocationTable:
    """The checked float64 collocation table for n first-kind Chebyshev nodes on [0, 1]."""
    if n < 1:
        raise ValueError("collocation needs at least one node")
    i = np.arange(1, n + 1)
    t = -np.cos((2 * i - 1) * np.pi / (2 * n))  # ascending in (-1, 1)
    coef = lagrange_coefficients(t)
    if not np.allclose(cheb.chebvander(t, n - 1) @ coef, np.eye(n), rtol=0, atol=1e-12 * n):
        raise ArithmeticError("Chebyshev Lagrange coefficients are not the inverse of the Vandermonde matrix")
    # u = (t + 1)/2 maps [-1, 1] to [0, 1], so du = dt/2
    matrix = 0.5 * antiderivatives(t, n) @ coef
    weights = 0.5 * antiderivatives(np.array([1.0]), n)[0] @ coef
    tab = CollocationTable((t + 1) / 2, matrix, weights)
    check_table(tab, tol=1e-12 * n * n)
    return tab


@functools.lru_cache(maxsize=64)
def end_derivatives(n: int, order: int) -> np.ndarray:
    """T [order + 1, n]: T[m, j] = d^m l_j / dtau^m at tau = 1 (the window's end), for Taylor extrapolation of the
    window's polynomial into the next window. Checked: the extrapolation reproduces polynomials of degree <= order."""
    nodes = chebyshev_table(n).nodes
    coef = lagrange_coefficients(2 * nodes - 1)  # [k, j] in t = 2 tau - 1
    out = np.stack([cheb.chebval(1.0, cheb.chebder(coef, m, scl=2.0)) if m < n else np.zeros(n)
                    for m in range(order + 1)])
    at = np.array([1.0, 1.3, 2.0])  # points beyond the window
    for p in range(min(order, n - 1) + 1):
        taylor = sum((at - 1.0) ** m / math.factorial(m) * (out[m] @ nodes**p) for m in range(order + 1))
        if not np.allclose(taylor, at**p, rtol=0, atol=1e-9 * 4.0**n):
            raise ArithmeticError(f"end derivatives fail to extrapolate degree {p} with {n} nodes")
    return out
