"""The streaming-softmax kernel (diffcli/denoisers/softmax.py) against float64 references."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from diffcli.denoisers import softmax

EPS = float(np.finfo(np.float32).eps)
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)


def reference(logits, values):
    """Softmax-weighted mean in float64: logits [B, M], values [M, V]."""
    logits, values = np.asarray(logits, np.float64), np.asarray(values, np.float64)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (w / w.sum(axis=1, keepdims=True)) @ values


def problem(seed, m, spread):
    rng = np.random.default_rng(seed)
    logits = (spread * rng.standard_normal((3, m))).astype(np.float32)
    values = rng.uniform(-1, 1, (m, 4)).astype(np.float32)
    return logits, values


fold = jax.jit(softmax.fold)
merge = jax.jit(softmax.merge)


def fold_chunks(logits, values, cuts):
    p = softmax.empty((logits.shape[0],), values.shape[1:])
    bounds = [0, *sorted(cuts), logits.shape[1]]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        p = fold(p, jnp.asarray(logits[:, lo:hi]), jnp.asarray(values[lo:hi]))
    return p


@given(st.integers(0, 2**16), st.floats(0.1, 300.0), st.lists(st.integers(0, 6), max_size=5))
@PROPERTY
def test_fold_over_any_chunking_is_the_exact_softmax_mean(seed, spread, cuts):
    """Cuts on a grid of 8 (empty chunks included), so the few chunk shapes compile once."""
    logits, values = problem(seed, 48, spread)
    got = np.asarray(softmax.finish(fold_chunks(logits, values, [8 * c for c in cuts])))
    np.testing.assert_allclose(got, reference(logits, values), atol=64 * EPS, rtol=0)


@given(st.integers(0, 2**16), st.floats(0.1, 300.0))
@PROPERTY
def test_merge_is_associative_and_matches_one_fold(seed, spread):
    logits, values = problem(seed, 30, spread)
    a, b, c = (fold_chunks(logits[:, lo:hi], values[lo:hi], []) for lo, hi in ((0, 7), (7, 19), (19, 30)))
    left, right = softmax.finish(merge(merge(a, b), c)), softmax.finish(merge(a, merge(b, c)))
    np.testing.assert_allclose(np.asarray(left), np.asarray(right), atol=16 * EPS, rtol=0)
    np.testing.assert_allclose(np.asarray(left), reference(logits, values), atol=64 * EPS, rtol=0)


def test_all_minus_inf_and_empty_chunks_are_no_ops():
    logits, values = problem(0, 10, 3.0)
    p = fold_chunks(logits, values, [])
    for chunk, vals in ((np.full((3, 5), -np.inf, np.float32), values[:5]), (logits[:, :0], values[:0])):
        q = fold(p, jnp.asarray(chunk), jnp.asarray(vals))
        for a, b in zip(q, p, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the same program on the same inputs
    # from empty partials: a -inf chunk leaves them empty (no NaN), and merging with empty changes nothing
    e = fold(softmax.empty((3,), (4,)), jnp.full((3, 5), -jnp.inf), jnp.asarray(values[:5]))
    assert np.all(np.asarray(e.m) == -np.inf) and np.all(np.asarray(e.s) == 0) and np.all(np.asarray(e.t) == 0)
    for a, b in zip(merge(e, p), p, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@given(st.integers(0, 2**16), st.floats(1.0, 38.0))
@PROPERTY
def test_huge_logits_give_a_convex_combination(seed, log_mag):
    """Logits of any finite size (here up to 1e38, some -inf) give weights in [0, 1] and a mean inside the values'
    box; the largest logit alone wins when the gaps are huge."""
    rng = np.random.default_rng(seed)
    logits = (10.0**log_mag * rng.uniform(-1, 1, (3, 40))).astype(np.float32)
    logits[:, ::7] = -np.inf
    values = rng.uniform(-1, 1, (40, 4)).astype(np.float32)
    p = fold_chunks(logits, values, [13, 29])
    out = np.asarray(softmax.finish(p))
    assert np.all(np.isfinite(out)) and np.all(np.asarray(p.s) >= 1.0)
    assert np.all(out >= values.min(0) - 8 * EPS) and np.all(out <= values.max(0) + 8 * EPS)
    if log_mag > 12:
        np.testing.assert_allclose(out, values[np.argmax(logits, axis=1)], atol=8 * EPS)


def test_fold_each_and_weights_match_the_reference():
    """Per-entry values (candidate axis 0, as the per-pixel posteriors use it) and one-piece weights."""
    logits, values = problem(5, 12, 4.0)
    per = np.random.default_rng(6).uniform(-1, 1, (12, 3)).astype(np.float32)  # candidate c's value at entry b
    p = softmax.empty((3,))
    for lo, hi in ((0, 5), (5, 12)):
        p = jax.jit(softmax.fold_each, static_argnames="axis")(p, jnp.asarray(logits[:, lo:hi].T),
                                                               jnp.asarray(per[lo:hi]), axis=0)
    w = reference(logits, np.eye(12))
    np.testing.assert_allclose(np.asarray(softmax.finish(p)), np.sum(w * per.T, axis=1), atol=64 * EPS)
    np.testing.assert_allclose(np.asarray(softmax.weights(jnp.asarray(logits))), w, atol=16 * EPS)


def test_merge_across_devices_equals_one_fold():
    """Eight fake devices each fold their own candidates (one holds only -inf); merge_across gives the whole mean."""
    script = textwrap.dedent("""
        import numpy as np, jax, jax.numpy as jnp
        from jax.sharding import Mesh, PartitionSpec as P, AxisType
        from diffcli.denoisers import softmax
        rng = np.random.default_rng(0)
        logits = (30 * rng.standard_normal((3, 64))).astype(np.float32)
        logits[:, 8:16] = -np.inf
        values = rng.uniform(-1, 1, (64, 4)).astype(np.float32)
        mesh = Mesh(np.array(jax.devices()), ("r",), axis_types=(AxisType.Auto,))
        def per_device(l, v):
            p = softmax.fold(softmax.varying(softmax.empty((3,), (4,)), "r"), l, v)
            return softmax.finish(softmax.merge_across(p, "r"))
        f = jax.shard_map(per_device, mesh=mesh, in_specs=(P(None, "r"), P("r")), out_specs=P())
        w = np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True))
        ref = (w / w.sum(1, keepdims=True)) @ values
        got = np.asarray(jax.jit(f)(jnp.asarray(logits), jnp.asarray(values)))
        assert len(jax.devices()) == 8
        print(float(np.abs(got - ref).max()))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) <= 64 * EPS
