"""Golden stage 3, the base: its exact softmax (empirical, or per-pixel pca-local) over the golden subset only."""

from __future__ import annotations

import jax.numpy as jnp

from diffcli.denoisers import softmax
from diffcli.denoisers.golden.plan import GoldenPlan
from diffcli.denoisers.pca_local import masked_partials


def subset_mean(plan: GoldenPlan, x, sigma, subset, axis: str | None = None):
    """The base's posterior mean [D] of one query x [D] over its subset (rows [K, D], squared distance minus the
    nearest's [K], kept [K]). `axis`: inside shard_map, the mesh axis whose devices each hold part of the subset;
    their softmax partials merge exactly."""
    rows, d_rel, keep = subset
    inv2var = 0.5 / jnp.square(sigma)

    def merged(p):
        return softmax.finish(p if axis is None else softmax.merge_across(p, axis))

    if plan.base == "empirical":
        logits = jnp.where(keep, -d_rel * inv2var, -jnp.inf)
        return merged(softmax.fold(softmax.empty((), rows.shape[1:]), logits, rows))

    def branch(cls: int, band):
        chunk = plan.subset_chunk(rows.shape[1], cls)
        return merged(masked_partials(x, rows, keep, plan.masks.operand(band, cls), inv2var, chunk, axis))

    return plan.masks.per_query(sigma, branch)
