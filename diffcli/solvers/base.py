"""The solver contract: sample_<name>(denoiser, x_T, sigmas, *, key, **options) -> SampleResult."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class SampleResult(NamedTuple):
    """x0: the samples [B, ...]; nfe: denoiser evaluations per sample; rounds: sequential batched denoiser calls;
    aux: small dict of arrays. aux["nonfinite_step"] is the first step whose state was NaN/inf, or -1."""

    x0: jax.Array
    nfe: jax.Array
    rounds: jax.Array
    aux: dict


def step_keys(keys, step):
    """Per-sample keys [B] for one step (or any integer tag), so noise never depends on the batch."""
    return jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)


def per_sample_normal(keys, step, shape_tail, dtype=jnp.float32):
    """Standard normal noise [B, *shape_tail] drawn from each sample's own key and the step tag."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step), shape_tail, dtype))(keys)


def first_nonfinite(prev, step, x):
    """Carry helper: keep the first step at which x stopped being finite (-1 while all is finite)."""
    bad = ~jnp.all(jnp.isfinite(x))
    return jnp.where((prev < 0) & bad, step, prev)
