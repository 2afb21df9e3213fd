"""A residual MLP for vector data, conditioned on the noise embedding (the vector analogue of the U-Net)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from diffcli.models.embedding import NoiseEmbedding


class MLPBlock(eqx.Module):
    """LayerNorm-SiLU-Linear twice with the embedding added, residual (pre-norm ResNet block)."""

    norm: eqx.nn.LayerNorm
    lin1: eqx.nn.Linear
    emb: eqx.nn.Linear
    lin2: eqx.nn.Linear

    def __init__(self, width: int, emb_dim: int, *, key):
        k = jax.random.split(key, 3)
        self.norm = eqx.nn.LayerNorm(width)
        self.lin1 = eqx.nn.Linear(width, width, key=k[0])
        self.emb = eqx.nn.Linear(emb_dim, width, key=k[1])
        self.lin2 = eqx.nn.Linear(width, width, key=k[2])

    def __call__(self, h, emb):
        z = self.lin1(jax.nn.silu(self.norm(h))) + self.emb(emb)
        return (h + self.lin2(jax.nn.silu(z))) * math.sqrt(0.5)


class ResMLP(eqx.Module):
    """F(x, c_noise) for one vector [D]; `features` gives the middle hidden layer."""

    embed: NoiseEmbedding
    lin_in: eqx.nn.Linear
    blocks: list
    norm_out: eqx.nn.LayerNorm
    lin_out: eqx.nn.Linear

    def __init__(self, dim: int, *, width: int, depth: int, emb_dim: int, key):
        keys = jax.random.split(key, depth + 3)
        self.embed = NoiseEmbedding(min(width, 64), emb_dim, key=keys[0])
        self.lin_in = eqx.nn.Linear(dim, width, key=keys[1])
        self.blocks = [MLPBlock(width, emb_dim, key=k) for k in keys[3:]]
        self.norm_out = eqx.nn.LayerNorm(width)
        out = eqx.nn.Linear(width, dim, key=keys[2])
        self.lin_out = eqx.tree_at(lambda m: (m.weight, m.bias), out,
                                   (jnp.zeros_like(out.weight), jnp.zeros_like(out.bias)))

    def _hidden(self, x, c_noise, stop: int):
        emb = self.embed(c_noise)
        h = self.lin_in(x)
        for block in self.blocks[:stop]:
            h = block(h, emb)
        return h

    def __call__(self, x, c_noise):
        return self.lin_out(jax.nn.silu(self.norm_out(self._hidden(x, c_noise, len(self.blocks)))))

    def features(self, x, c_noise):
        """The hidden state after the first half of the blocks."""
        return self._hidden(x, c_noise, max(1, len(self.blocks) // 2))
