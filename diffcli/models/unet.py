"""A small U-Net for images (Ronneberger et al. 2015, with the DDPM/EDM residual blocks and noise embedding)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from diffcli.models.embedding import NoiseEmbedding

SKIP_SCALE = math.sqrt(0.5)  # keeps the residual sum's variance constant (EDM's skip_scale)


def _norm(channels: int) -> eqx.nn.GroupNorm:
    return eqx.nn.GroupNorm(math.gcd(channels, 8), channels)


class ResBlock(eqx.Module):
    """GroupNorm-SiLU-Conv twice, the noise embedding added in between, 1x1 skip when channels change."""

    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    emb: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None

    def __init__(self, cin: int, cout: int, emb_dim: int, *, key):
        k = jax.random.split(key, 4)
        self.norm1, self.norm2 = _norm(cin), _norm(cout)
        self.conv1 = eqx.nn.Conv2d(cin, cout, 3, padding=1, key=k[0])
        self.emb = eqx.nn.Linear(emb_dim, cout, key=k[1])
        self.conv2 = eqx.nn.Conv2d(cout, cout, 3, padding=1, key=k[2])
        self.skip = eqx.nn.Conv2d(cin, cout, 1, key=k[3]) if cin != cout else None

    def __call__(self, x, emb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, None, None]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return ((x if self.skip is None else self.skip(x)) + h) * SKIP_SCALE


def levels_for(resolution: int, requested: int) -> int:
    """How many resolution levels fit: each downsampling halves an even side (8 px -> 2 levels, 28 px -> 3)."""
    levels, side = 1, resolution
    while levels < requested and side % 2 == 0 and side >= 8:
        levels, side = levels + 1, side // 2
    return levels


class UNet(eqx.Module):
    """F(x, c_noise) for one image [C, H, W]; `features` gives the pooled bottleneck activations."""

    embed: NoiseEmbedding
    conv_in: eqx.nn.Conv2d
    down: list
    downsample: list
    mid: list
    up: list
    upsample: list
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d

    def __init__(self, channels_in: int, *, width: int, mults: tuple[int, ...], blocks: int, emb_dim: int, key):
        keys = iter(jax.random.split(key, 64 + 8 * len(mults) * (blocks + 2)))
        self.embed = NoiseEmbedding(width, emb_dim, key=next(keys))
        self.conv_in = eqx.nn.Conv2d(channels_in, width, 3, padding=1, key=next(keys))
        skips, ch = [width], width
        self.down, self.downsample = [], []
        for level, m in enumerate(mults):
            level_blocks = []
            for _ in range(blocks):
                level_blocks.append(ResBlock(ch, width * m, emb_dim, key=next(keys)))
                ch = width * m
                skips.append(ch)
            self.down.append(level_blocks)
            last = level == len(mults) - 1
            self.downsample.append(None if last else eqx.nn.Conv2d(ch, ch, 3, stride=2, padding=1, key=next(keys)))
            if not last:
                skips.append(ch)
        self.mid = [ResBlock(ch, ch, emb_dim, key=next(keys)), ResBlock(ch, ch, emb_dim, key=next(keys))]
        self.up, self.upsample = [], []
        for level, m in reversed(list(enumerate(mults))):
            level_blocks = []
            for _ in range(blocks + 1):
                level_blocks.append(ResBlock(ch + skips.pop(), width * m, emb_dim, key=next(keys)))
                ch = width * m
            self.up.append(level_blocks)
            self.upsample.append(None if level == 0 else eqx.nn.Conv2d(ch, ch, 3, padding=1, key=next(keys)))
        self.norm_out = _norm(ch)
        conv_out = eqx.nn.Conv2d(ch, channels_in, 3, padding=1, key=next(keys))
        # zero output layer: the untrained network is D = c_skip x, a stable start (EDM does the same in spirit)
        self.conv_out = eqx.tree_at(lambda c: (c.weight, c.bias), conv_out,
                                    (jnp.zeros_like(conv_out.weight), jnp.zeros_like(conv_out.bias)))

    def _encode(self, x, c_noise):
        emb = self.embed(c_noise)
        h = self.conv_in(x)
        skips = [h]
        for level_blocks, down in zip(self.down, self.downsample, strict=True):
            for block in level_blocks:
                h = block(h, emb)
                skips.append(h)
            if down is not None:
                h = down(h)
                skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        return h, skips, emb

    def __call__(self, x, c_noise):
        h, skips, emb = self._encode(x, c_noise)
        for level_blocks, up in zip(self.up, self.upsample, strict=True):
            for block in level_blocks:
                h = block(jnp.concatenate([h, skips.pop()], axis=0), emb)
            if up is not None:
                h = up(jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2))  # nearest upsampling, then a conv
        return self.conv_out(jax.nn.silu(self.norm_out(h)))

    def features(self, x, c_noise):
        """Bottleneck activations averaged over space: the reference network's feature space."""
        return jnp.mean(self._encode(x, c_noise)[0], axis=(1, 2))
