"""Training checkpoints: model, EMA and optimiser state with the settings they belong to, written atomically."""

from __future__ import annotations

from diffcli.errors import DiffcliError
from diffcli.models.file import read_header, read_tree, write_tree


def checkpoint_path(model_path: str) -> str:
    """Where the checkpoint of a model file lives."""
    return model_path + ".ckpt"


def save_checkpoint(path, state, *, step: int, settings: dict, history: list) -> None:
    """Write (model, ema, opt_state) at `step`; settings identify the run a resume must match."""
    write_tree(path, {"kind": "checkpoint", "step": int(step), "settings": settings, "history": history}, state)


def load_checkpoint(path, like, *, settings: dict):
    """(state, step, history) from a checkpoint of the same run; a checkpoint of another run is refused."""
    header, payload = read_header(path, "checkpoint")
    saved = header.get("settings", {})
    differing = sorted(k for k in set(saved) | set(settings) if k not in RESUMABLE and saved.get(k) != settings.get(k))
    if differing:
        raise DiffcliError(
            f"checkpoint '{path}' belongs to a run with a different {differing[0]} "
            f"({saved.get(differing[0])!r} there, {settings.get(differing[0])!r} now); drop --resume or match it."
        )
    return read_tree(payload, like, path), int(header["step"]), list(header.get("history", []))


RESUMABLE = {"steps", "save_every"}  # settings a resumed run may change without changing the result
