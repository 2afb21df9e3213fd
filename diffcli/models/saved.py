"""Saving and loading a trained reference network (EMA weights + the config that rebuilds it)."""

from __future__ import annotations

import jax

from diffcli.errors import DiffcliError
from diffcli.models.file import read_header, read_tree, write_tree
from diffcli.models.precond import EDMPrecond, ModelConfig, build_model


def save_model(path, model: EDMPrecond, config: ModelConfig, info: dict) -> None:
    """Write a model file; `info` records how it was trained (dataset, steps, seed, ...)."""
    write_tree(path, {"kind": "model", "config": config.to_json(), "info": info}, model)


def load_model(path) -> tuple[EDMPrecond, ModelConfig, dict]:
    """(model, config, info) from a model file written by `save_model`."""
    header, payload = read_header(path, "model")
    try:
        config = ModelConfig.from_json(header["config"])
    except (KeyError, TypeError, ValueError):
        raise DiffcliError(f"'{path}' has a model header diffcli cannot read; retrain or re-export it.") from None
    skeleton = build_model(config, jax.random.PRNGKey(0))
    return read_tree(payload, skeleton, path), config, header.get("info", {})
