"""Key derivations shared by stochastic components: per-query step keys and per-row uniform draws."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def query_keys(seed: int, key, sigma, b: int):
    """One key per query and step, from per-query keys [B] (or, when None, keys from `seed` and the query's
    position) folded with sigma's bits: a new draw at every step even when the solver hands the same key."""
    if key is None:
        key = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.arange(b))
    tag = jax.lax.bitcast_convert_type(sigma.astype(jnp.float32), jnp.uint32)
    return jax.vmap(jax.random.fold_in)(key, tag)


def id_uniforms(key, ids):
    """Uniform [0, 1) draws, one per global row id: a counter-based hash of (key, id), so a row's draw is the same
    whatever array, list piece or device holds it."""
    kd = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    h = _mix32(ids.astype(jnp.uint32) * jnp.uint32(0x9E3779B1) ^ kd[0].astype(jnp.uint32))
    h = _mix32(h ^ kd[1].astype(jnp.uint32))
    return (h >> 8).astype(jnp.float32) * jnp.float32(2.0 ** -24)


def _mix32(h):
    """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability about 1/2."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)
