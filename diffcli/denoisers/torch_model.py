"""PyTorch networks as denoisers: `--denoiser torch --model FILE.py:FACTORY` (a torch.nn.Module and its
parameterisation) and `--denoiser diffusers --model DIR` (a local UNet2DModel folder and its scheduler config)."""

from __future__ import annotations

from diffcli.errors import DiffcliError
from diffcli.models.external import call_factory, given_parameterisation, split_returned
from diffcli.models.wrappers import ModelDenoiser, resolve_parameterisation


def build_torch(index, opts) -> ModelDenoiser:
    """The factory's module `m(x, t) -> output`, run by PyTorch behind a host callback."""
    from diffcli.models.torch_bridge import import_torch, torch_network

    import_torch("torch")  # before the model file, which imports torch itself
    shape = tuple(int(v) for v in index.shape)
    net, declared = split_returned(call_factory(opts.model, shape, denoiser="torch"), spec=opts.model)
    source = f"the model '{opts.model}'"
    param = resolve_parameterisation(given_parameterisation(opts), declared, source=source)
    return ModelDenoiser.wrap(torch_network(net, shape, device=opts.model_device, source=source), param,
                              source=source)


def build_diffusers(index, opts) -> ModelDenoiser:
    """A diffusers UNet2DModel folder; its scheduler config says the parameterisation."""
    from diffcli.models.torch_bridge import SCHEDULER_FILES, import_torch, load_diffusers

    import_torch("diffusers")
    shape = tuple(int(v) for v in index.shape)
    net, declared = load_diffusers(opts.model, shape, device=opts.model_device)
    source = f"model folder '{opts.model}'"
    if declared is None and (opts.model_output is None or opts.model_noise is None):
        raise DiffcliError(f"{source} has no scheduler config ({' or '.join(SCHEDULER_FILES)}); add it or pass "
                           "--model-output and --model-noise.")
    param = resolve_parameterisation(given_parameterisation(opts), declared, source=f"{source}'s scheduler config")
    return ModelDenoiser.wrap(net, param, source=source)
