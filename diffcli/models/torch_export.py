"""diffcli's own networks (the equinox U-Net and residual MLP of `diffcli train`) mirrored in PyTorch, weights copied.

The mirror is the raw network F(x_in, c_noise); the EDM preconditioning around it is the wrapper's
`--model-output edm` (`--model-noise ve`), so `--denoiser torch` with the mirror computes the same D(x, sigma) as
`--denoiser neural` with the model file, to float rounding. Use it from the command line as

    DIFFCLI_TORCH_EXPORT=model.eqx diffcli sample --denoiser torch --model diffcli.models.torch_export:build ...

or from a two-line model file of your own: `def build(shape): return from_model_file("model.eqx", shape)`.
"""

from __future__ import annotations

import math
import os

import numpy as np

from diffcli.errors import DiffcliError
from diffcli.models.torch_bridge import import_torch

torch = import_torch("torch")
nn = torch.nn
F = torch.nn.functional

MODEL_ENV = "DIFFCLI_TORCH_EXPORT"
SKIP_SCALE = math.sqrt(0.5)  # unet.SKIP_SCALE and the MLP block's residual scale


# --- layers: each built from its equinox twin, weights copied ---------------------------------------------------

def _tensor(array, dtype) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float64)).to(dtype)


def linear(lin, dtype) -> nn.Linear:
    out = nn.Linear(lin.in_features, lin.out_features, bias=lin.use_bias, dtype=dtype)
    out.weight.data = _tensor(lin.weight, dtype)
    if lin.use_bias:
        out.bias.data = _tensor(lin.bias, dtype)
    return out


def conv2d(conv, dtype) -> nn.Conv2d:
    pads = [tuple(p) for p in conv.padding]
    if any(lo != hi for lo, hi in pads):
        raise DiffcliError(f"a convolution with asymmetric padding {pads} has no PyTorch mirror here.")
    out = nn.Conv2d(conv.in_channels, conv.out_channels, tuple(conv.kernel_size), stride=tuple(conv.stride),
                    padding=tuple(lo for lo, _ in pads), dilation=tuple(conv.dilation), groups=conv.groups,
                    bias=conv.use_bias, dtype=dtype)
    out.weight.data = _tensor(conv.weight, dtype)
    if conv.use_bias:
        out.bias.data = _tensor(np.reshape(conv.bias, -1), dtype)  # equinox keeps it as [C, 1, 1]
    return out


def group_norm(norm, dtype) -> nn.GroupNorm:
    out = nn.GroupNorm(norm.groups, norm.channels, eps=norm.eps, affine=norm.channelwise_affine, dtype=dtype)
    if norm.channelwise_affine:
        out.weight.data, out.bias.data = _tensor(norm.weight, dtype), _tensor(norm.bias, dtype)
    return out


def layer_norm(norm, dtype) -> nn.LayerNorm:
    if norm.use_weight != norm.use_bias:
        raise DiffcliError("a LayerNorm with a weight but no bias (or the reverse) has no PyTorch mirror here.")
    out = nn.LayerNorm(tuple(norm.shape), eps=norm.eps, elementwise_affine=norm.use_weight, dtype=dtype)
    if norm.use_weight:
        out.weight.data, out.bias.data = _tensor(norm.weight, dtype), _tensor(norm.bias, dtype)
    return out


# --- blocks (diffcli/models/embedding.py, unet.py, mlp.py) --------------------------------------------------------

class NoiseEmbedding(nn.Module):
    """embedding.NoiseEmbedding: sinusoidal features of c_noise [B], then a two-layer MLP."""

    def __init__(self, embed, dtype):
        super().__init__()
        half = embed.fourier_dim // 2
        # the frequencies as embedding.sinusoidal makes them (in float32), then widened
        freqs = np.exp(-np.log(np.float32(10000.0)) * np.arange(half, dtype=np.float32) / np.float32(half))
        self.register_buffer("freqs", _tensor(freqs.astype(np.float32), dtype))
        self.lin1, self.lin2 = linear(embed.lin1, dtype), linear(embed.lin2, dtype)

    def forward(self, c_noise):
        angle = c_noise[:, None] * 1000.0 * self.freqs[None]
        return self.lin2(F.silu(self.lin1(torch.cat([torch.cos(angle), torch.sin(angle)], dim=1))))


class ResBlock(nn.Module):
    """unet.ResBlock: GroupNorm-SiLU-Conv twice, the embedding added in between, 1x1 skip when channels change."""

    def __init__(self, block, dtype):
        super().__init__()
        self.norm1, self.norm2 = group_norm(block.norm1, dtype), group_norm(block.norm2, dtype)
        self.conv1, self.conv2 = conv2d(block.conv1, dtype), conv2d(block.conv2, dtype)
        self.emb = linear(block.emb, dtype)
        self.skip = None if block.skip is None else conv2d(block.skip, dtype)

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return ((x if self.skip is None else self.skip(x)) + h) * SKIP_SCALE


def _optional_conv(conv, dtype):
    return nn.Identity() if conv is None else conv2d(conv, dtype)  # Identity marks "no resampling at this level"


class UNet(nn.Module):
    """unet.UNet for a batch: F(x [B, C, H, W], c_noise [B])."""

    def __init__(self, net, dtype=torch.float32):
        super().__init__()
        self.embed = NoiseEmbedding(net.embed, dtype)
        self.conv_in = conv2d(net.conv_in, dtype)
        self.down = nn.ModuleList(nn.ModuleList(ResBlock(b, dtype) for b in level) for level in net.down)
        self.downsample = nn.ModuleList(_optional_conv(c, dtype) for c in net.downsample)
        self.mid = nn.ModuleList(ResBlock(b, dtype) for b in net.mid)
        self.up = nn.ModuleList(nn.ModuleList(ResBlock(b, dtype) for b in level) for level in net.up)
        self.upsample = nn.ModuleList(_optional_conv(c, dtype) for c in net.upsample)
        self.norm_out = group_norm(net.norm_out, dtype)
        self.conv_out = conv2d(net.conv_out, dtype)

    def forward(self, x, c_noise):
        emb = self.embed(c_noise)
        h = self.conv_in(x)
        skips = [h]
        for level, down in zip(self.down, self.downsample, strict=True):
            for block in level:
                h = block(h, emb)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        for level, up in zip(self.up, self.upsample, strict=True):
            for block in level:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if not isinstance(up, nn.Identity):
                h = up(h.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))  # nearest, as unet.UNet
        return self.conv_out(F.silu(self.norm_out(h)))


class MLPBlock(nn.Module):
    """mlp.MLPBlock: LayerNorm-SiLU-Linear twice with the embedding added, residual."""

    def __init__(self, block, dtype):
        super().__init__()
        self.norm = layer_norm(block.norm, dtype)
        self.lin1, self.emb, self.lin2 = (linear(block.lin1, dtype), linear(block.emb, dtype),
                                          linear(block.lin2, dtype))

    def forward(self, h, emb):
        z = self.lin1(F.silu(self.norm(h))) + self.emb(emb)
        return (h + self.lin2(F.silu(z))) * SKIP_SCALE


class ResMLP(nn.Module):
    """mlp.ResMLP for a batch: F(x [B, D], c_noise [B])."""

    def __init__(self, net, dtype=torch.float32):
        super().__init__()
        self.embed = NoiseEmbedding(net.embed, dtype)
        self.lin_in = linear(net.lin_in, dtype)
        self.blocks = nn.ModuleList(MLPBlock(b, dtype) for b in net.blocks)
        self.norm_out = layer_norm(net.norm_out, dtype)
        self.lin_out = linear(net.lin_out, dtype)

    def forward(self, x, c_noise):
        emb = self.embed(c_noise)
        h = self.lin_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.lin_out(F.silu(self.norm_out(h)))


# --- whole networks and the factory -------------------------------------------------------------------------------

def mirror(net, dtype=torch.float32) -> nn.Module:
    """The PyTorch twin of diffcli's raw network `net` (a unet.UNet or mlp.ResMLP), in eval mode."""
    from diffcli.models.mlp import ResMLP as JaxResMLP
    from diffcli.models.unet import UNet as JaxUNet

    if isinstance(net, JaxUNet):
        return UNet(net, dtype).eval()
    if isinstance(net, JaxResMLP):
        return ResMLP(net, dtype).eval()
    raise DiffcliError(f"diffcli has no PyTorch mirror of a {type(net).__name__}; it mirrors UNet and ResMLP.")


def declaration(sigma_data: float) -> dict:
    """The parameterisation of the mirror: the raw F of EDM's preconditioning, conditioned on c_noise = ln(sigma)/4."""
    return {"model_output": "edm", "model_noise": "ve", "model_sigma_data": float(sigma_data)}


def from_model_file(path: str, shape: tuple[int, ...] | None = None, dtype=torch.float32) -> dict:
    """A factory's return value for a model file of `diffcli train`: the mirrored network and its parameterisation;
    a network trained on another sample shape than `shape` is one sentence."""
    from diffcli.models.saved import load_model

    if not os.path.isfile(path):
        raise DiffcliError(f"model file '{path}' does not exist.")
    model, config, _ = load_model(path)
    if shape is not None and tuple(config.shape) != tuple(shape):
        raise DiffcliError(f"model '{path}' was trained on samples of shape {tuple(config.shape)}, not "
                           f"{tuple(shape)}.")
    return {"module": mirror(model.net, dtype), **declaration(config.sigma_data)}


def build(shape):
    """`--model diffcli.models.torch_export:build`: the model file named by $DIFFCLI_TORCH_EXPORT, mirrored."""
    path = os.environ.get(MODEL_ENV)
    if not path:
        raise DiffcliError(f"set {MODEL_ENV} to the model file (from diffcli train) to mirror")
    return from_model_file(path, shape)
