"""The one-device GoldDiff denoiser: a plan and all the index rows; the stages run per query, vmapped."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcli.denoisers.base import AbstractDenoiser, exact_matmuls
from diffcli.denoisers.golden.plan import GoldenPlan, GoldenRows, plan_and_rows
from diffcli.denoisers.golden.posterior import subset_mean
from diffcli.denoisers.golden.select import select
from diffcli.denoisers.golden.stratified import stratified_mean, stratified_select
from diffcli.denoisers.rows import device_rows, pad_rows, to_float
from diffcli.index.coarse import piece_blocks

DIAG_CHUNK = 1024  # rows per chunk of diagnose's full scan; data is padded to a multiple of it


class GoldenDenoiser(AbstractDenoiser):
    """GoldDiff over an `empirical` or `pca-local` base (docs/golddiff.md)."""

    plan: GoldenPlan
    rows: GoldenRows  # data padded to a multiple of DIAG_CHUNK rows (padding never screened in)

    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        chosen, mean = self._stages()
        x0, _ = self.plan.map_queries(lambda *a: chosen(self.plan, self.rows, *a), *self.plan.queries(x, sigma, key),
                                      finish=lambda *a: mean(self.plan, *a))
        return x0.reshape(x.shape)

    def _stages(self):
        """(selection, posterior mean) of the plan's estimator."""
        if self.plan.estimator == "stratified":
            return stratified_select, stratified_mean
        return select, subset_mean

    @exact_matmuls
    def diagnose(self, x, sigma, *, key=None):
        """k, pool size, certified bound, the candidates-only bound and the realised (unmasked) tail mass per query."""

        def one(xq, s, k):
            subset, diag = self._stages()[0](self.plan, self.rows, xq, s, k)
            diag["tail_mass"] = self._tail_mass(xq, s, diag.pop("ids"))
            return subset, diag

        _, diag = self.plan.map_queries(one, *self.plan.queries(x, sigma, key))
        return diag

    def _tail_mass(self, x, sigma, ids):
        """1 - sum_{i in S} w_i of the full empirical posterior, as Z_out / Z (exact distances, streamed)."""
        data = self.rows.data
        inside = jnp.zeros(data.shape[0], bool).at[jnp.maximum(ids, 0)].max(ids >= 0)
        real = jnp.arange(data.shape[0]) < self.plan.n
        chunks = data.reshape(-1, DIAG_CHUNK, data.shape[1])
        d = jax.lax.map(lambda c: jnp.sum(jnp.square(to_float(c) - x[None, :]), axis=1), chunks).reshape(-1)
        logit = -d * (0.5 / jnp.square(sigma))
        log_in = jax.nn.logsumexp(jnp.where(inside & real, logit, -jnp.inf))
        log_out = jax.nn.logsumexp(jnp.where(~inside & real, logit, -jnp.inf))
        return jnp.exp(log_out - jnp.logaddexp(log_in, log_out))


def build(index, opts) -> GoldenDenoiser:
    plan, rows = plan_and_rows(index, opts)
    padded, _ = pad_rows(rows["data"], DIAG_CHUNK)
    lists = rows["lists"]
    pieces = (None, None, None) if lists is None else (lists, *piece_blocks(rows["proxy"], lists))
    return GoldenDenoiser(plan, GoldenRows(device_rows(padded), device_rows(rows["proxy"]),
                                           jnp.asarray(rows["half_psq"]),
                                           *(None if a is None else device_rows(a) for a in pieces)))
