"""EDM preconditioning (Karras et al. 2022, Table 1): D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import equinox as eqx
import jax
import jax.numpy as jnp

from diffcli.models.mlp import ResMLP
from diffcli.models.unet import UNet, levels_for


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; it travels in the model file's JSON header."""

    kind: str  # "unet" or "mlp"
    shape: tuple[int, ...]  # one sample's shape: (C, H, W) or (D,)
    sigma_data: float
    width: int = 32
    mults: tuple[int, ...] = (1, 2)
    blocks: int = 1
    emb_dim: int = 128
    depth: int = 4  # mlp only

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["shape"], d["mults"] = tuple(d["shape"]), tuple(d["mults"])
        return cls(**d)


def default_config(shape: tuple[int, ...], sigma_data: float, *, width: int | None = None) -> ModelConfig:
    """A U-Net sized for the resolution (8 px: one downsampling; 16 px and up: two), or an MLP for vectors."""
    if len(shape) == 1:
        return ModelConfig("mlp", tuple(shape), float(sigma_data), width=width or 256, emb_dim=128, depth=4)
    side = min(shape[1], shape[2])
    levels = levels_for(side, 2 if side <= 8 else 3)
    mults = (1, 2, 2)[:levels]
    return ModelConfig("unet", tuple(shape), float(sigma_data),
                       width=width or (16 if side <= 8 else 32 if side <= 16 else 48), mults=mults)


def edm_coefficients(sigma, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) for sigma [B]."""
    s2, d2 = sigma**2, sigma_data**2
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / jnp.sqrt(s2 + d2)
    c_in = 1.0 / jnp.sqrt(s2 + d2)
    c_noise = jnp.log(jnp.maximum(sigma, 1e-20)) / 4.0
    return c_skip, c_out, c_in, c_noise


class EDMPrecond(eqx.Module):
    """The preconditioned denoiser around a raw network F; x [B, ...], sigma [B] -> x0_hat [B, ...]."""

    net: eqx.Module
    sigma_data: float = eqx.field(static=True)

    def __call__(self, x, sigma):
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        bshape = (-1,) + (1,) * (x.ndim - 1)
        f = jax.vmap(self.net)(x * c_in.reshape(bshape), c_noise)
        return c_skip.reshape(bshape) * x + c_out.reshape(bshape) * f

    def features(self, x, sigma):
        """The raw network's feature vector for each sample [B, F]."""
        _, _, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        return jax.vmap(self.net.features)(x * c_in.reshape((-1,) + (1,) * (x.ndim - 1)), c_noise)


def build_model(config: ModelConfig, key) -> EDMPrecond:
    """A freshly initialised preconditioned network for `config`."""
    if config.kind == "unet":
        net = UNet(config.shape[0], width=config.width, mults=config.mults, blocks=config.blocks,
                   emb_dim=config.emb_dim, key=key)
    elif config.kind == "mlp":
        net = ResMLP(config.shape[0], width=config.width, depth=config.depth, emb_dim=config.emb_dim, key=key)
    else:
        raise ValueError(f"unknown network kind {config.kind!r}")
    return EDMPrecond(net, float(config.sigma_data))
