"""One streaming-softmax kernel: softmax-weighted means folded chunk by chunk, merged across chunks and devices.

Partials (m, s, t) of a set of candidates with logits l_i and values v_i hold the running max m = max l_i, the
normaliser s = sum exp(l_i - m) and the weighted sum t = sum exp(l_i - m) v_i; the mean is t / s. Every partial
starts empty (m = -inf, s = t = 0), and an empty or all -inf chunk folds in as a no-op.

Invariant: once anything is folded in, s >= 1 and every weight lies in [0, 1], so t / s is a convex combination of
the values for any finite logits, however large. XLA may evaluate a fused logit expression twice (once for the max,
once for the exponent) with different rounding (an FMA in one place only); at |logits| ~ 1e10 a one-ulp difference
is exp(+-1e3). So weights are clamped to exp(0) at most, and the element holding the chunk's max takes its weight
from that max itself, never from a second evaluation: the largest weight of the running max is exactly 1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Partials(NamedTuple):
    """Running (max logit m [*B], normaliser s [*B], weighted sum t [*B, *V]) of a streamed softmax."""

    m: jax.Array
    s: jax.Array
    t: jax.Array


def empty(batch_shape=(), value_shape=(), dtype=jnp.float32) -> Partials:
    """Partials of no candidates: m = -inf, s = 0, t = 0."""
    batch_shape, value_shape = tuple(batch_shape), tuple(value_shape)
    return Partials(jnp.full(batch_shape, -jnp.inf, dtype), jnp.zeros(batch_shape, dtype),
                    jnp.zeros(batch_shape + value_shape, dtype))


def varying(p: Partials, axis_name: str) -> Partials:
    """Mark partials as varying over a mesh axis (the carry of a scan over one device's rows inside shard_map)."""
    return jax.tree.map(lambda a: jax.lax.pcast(a, (axis_name,), to="varying"), p)


def _safe(m):
    """A finite reference for exponents: m itself, or 0 where m = -inf (nothing folded in yet)."""
    return jnp.where(jnp.isfinite(m), m, 0.0)


def _expand(a, ndim: int):
    """a [*B] broadcastable against [*B, ...] of rank ndim."""
    return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def _weights(p: Partials, logits, axis: int):
    """(new max, rescale of the old partials, chunk weights in [0, 1] shaped like logits)."""
    top = jnp.max(logits, axis=axis)
    m_new = jnp.maximum(p.m, top)
    ref = _safe(m_new)
    scale = jnp.exp(p.m - ref)  # exactly 1 when the old max stays the max; 0 from empty partials
    refx = jnp.expand_dims(ref, axis)
    w = jnp.exp(jnp.minimum(logits - refx, 0.0))
    # the chunk's argmax gets its weight from `top`, so it does not depend on how the logits were re-evaluated
    first = jnp.expand_dims(jnp.argmax(logits, axis=axis), axis)
    at_top = jax.lax.broadcasted_iota(first.dtype, logits.shape, axis) == first
    w = jnp.where(at_top, jnp.expand_dims(jnp.exp(jnp.minimum(top - ref, 0.0)), axis), w)
    return m_new, scale, w


def fold(p: Partials, logits, values) -> Partials:
    """Fold a chunk of candidates shared by the whole batch: logits [*B, M], values [M, *V]."""
    if logits.shape[-1] == 0:
        return p
    m_new, scale, w = _weights(p, logits, logits.ndim - 1)
    add = jnp.tensordot(w, values, axes=([w.ndim - 1], [0]))
    return Partials(m_new, p.s * scale + w.sum(axis=-1), p.t * _expand(scale, p.t.ndim) + add)


def fold_each(p: Partials, logits, values, axis: int = -1) -> Partials:
    """Fold a chunk whose values differ per batch entry: logits with the candidate axis `axis`, values shaped like
    logits plus value axes (e.g. per-pixel posteriors: logits [C, D] over C rows, values [C, D], axis=0)."""
    axis = axis % logits.ndim
    if logits.shape[axis] == 0:
        return p
    m_new, scale, w = _weights(p, logits, axis)
    add = jnp.sum(_expand(w, values.ndim) * values, axis=axis)
    return Partials(m_new, p.s * scale + w.sum(axis=axis), p.t * _expand(scale, p.t.ndim) + add)


def merge(a: Partials, b: Partials) -> Partials:
    """Partials of the union of two disjoint candidate sets (exact up to rounding; associative, commutative)."""
    m = jnp.maximum(a.m, b.m)
    ref = _safe(m)
    sa, sb = jnp.exp(a.m - ref), jnp.exp(b.m - ref)
    return Partials(m, a.s * sa + b.s * sb, a.t * _expand(sa, a.t.ndim) + b.t * _expand(sb, b.t.ndim))


def merge_across(p: Partials, axis_name: str) -> Partials:
    """Inside shard_map: merge every device's partials over mesh axis `axis_name` (pmax, then psum)."""
    m = jax.lax.pmax(p.m, axis_name)
    scale = jnp.exp(p.m - _safe(m))
    return Partials(m, jax.lax.psum(p.s * scale, axis_name), jax.lax.psum(p.t * _expand(scale, p.t.ndim), axis_name))


def weights(logits, axis: int = -1):
    """Normalised softmax weights along `axis` with fold's guarantees (each in [0, 1], the largest exactly 1 before
    normalising), for a softmax that fits in one piece."""
    axis = axis % logits.ndim
    batch = logits.shape[:axis] + logits.shape[axis + 1:]
    _, _, w = _weights(empty(batch, dtype=logits.dtype), logits, axis)
    return w / jnp.sum(w, axis=axis, keepdims=True)


def finish(p: Partials):
    """The softmax-weighted mean t / s (NaN only for partials of no candidates at all)."""
    return p.t / _expand(p.s, p.t.ndim)
