"""The training loop: AdamW with warm-up, gradient clipping and an EMA of the weights (EDM recipe, scaled down).

Everything random is a function of (seed, step): the batch is a slice of the epoch's permutation and the noise key
is fold_in(seed, step), so a run resumed from a checkpoint reproduces the uninterrupted run bit for bit on CPU.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffcli.errors import UsageError
from diffcli.models.precond import ModelConfig, build_model, default_config
from diffcli.models.saved import save_model
from diffcli.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from diffcli.train.loss import edm_loss
from diffcli.train.sigma_log import log_sigma_grid, loss_curve, write_loss_log


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema: float = 0.999
    seed: int = 0
    save_every: int = 500
    width: int | None = None

    def check(self) -> None:
        for name in ("steps", "batch_size", "warmup", "save_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1.")
        if not self.lr > 0:
            raise UsageError("--lr must be positive.")
        if not 0 <= self.ema < 1:
            raise UsageError("--ema must lie in [0, 1).")


def make_optimizer(s: TrainSettings) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with a linear warm-up to a constant rate (no dependence on --steps)."""
    schedule = lambda count: s.lr * jnp.minimum(1.0, (count + 1.0) / s.warmup)
    return optax.chain(optax.clip_by_global_norm(s.grad_clip), optax.adamw(schedule, weight_decay=s.weight_decay))


@functools.lru_cache(maxsize=2)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """Rows of the batch at `step`: slice `step mod (n // batch)` of epoch `step // (n // batch)`'s permutation."""
    per_epoch = n // batch
    epoch, j = divmod(step, per_epoch)
    return _epoch_permutation(seed, epoch, n)[j * batch : (j + 1) * batch]


def ema_update(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * model, on the array leaves only."""
    arrays = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, eqx.filter(ema, eqx.is_array),
                          eqx.filter(model, eqx.is_array))
    return eqx.combine(arrays, ema)


def make_step(s: TrainSettings):
    """One jitted update: (state, x0, step) -> (state, loss); the key is fold_in(seed, step)."""
    return _make_step(replace(s, steps=1, save_every=1))  # one compiled step per run identity, reused on resume


@functools.lru_cache(maxsize=8)
def _make_step(s: TrainSettings):
    optimizer = make_optimizer(s)

    @eqx.filter_jit
    def step_fn(state, x0, step):
        model, ema, opt_state = state
        key = jax.random.fold_in(jax.random.PRNGKey(s.seed), step)
        loss, grads = eqx.filter_value_and_grad(edm_loss)(model, x0, key)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        model = eqx.apply_updates(model, updates)
        decay = jnp.minimum(s.ema, (1.0 + step) / (10.0 + step))  # short EMA memory early on
        return (model, ema_update(ema, model, decay), opt_state), loss

    return step_fn


def fingerprint(data: np.ndarray) -> str:
    """A short digest of the training rows, so a resume on other data is refused."""
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()[:16]


def initial_state(config: ModelConfig, optimizer, seed: int):
    model = build_model(config, jax.random.PRNGKey(seed))
    return model, model, optimizer.init(eqx.filter(model, eqx.is_array))


def train(train_x: np.ndarray, heldout_x: np.ndarray, settings: TrainSettings, *, out: str, resume: bool = False,
          dataset: str = "", progress=None, log=None, log_every: int = 100) -> dict:
    """Train the EDM-preconditioned reference network on data-space rows [N, *shape]; write OUT, OUT.ckpt, loss logs."""
    settings.check()
    train_x = np.asarray(train_x, np.float32)
    n = len(train_x)
    if settings.batch_size > n:
        raise UsageError(f"--batch-size {settings.batch_size} exceeds the {n} training rows; lower it.")
    shape = tuple(train_x.shape[1:])
    config = default_config(shape, float(np.std(train_x)), width=settings.width)
    optimizer = make_optimizer(settings)
    identity = json.loads(json.dumps(  # as it reads back from the checkpoint header (tuples become lists)
        {**asdict(settings), "config": config.to_json(), "data": fingerprint(train_x), "dataset": dataset}))
    state = initial_state(config, optimizer, settings.seed)
    start, history = 0, []
    ckpt = checkpoint_path(out)
    if resume and os.path.exists(ckpt):
        state, start, history = load_checkpoint(ckpt, state, settings=identity)
    step_fn = make_step(settings)
    if progress and start:
        progress(start)  # a resumed run shows the steps already done
    t0, loss = time.perf_counter(), float("nan")
    step = start
    try:
        for step in range(start, settings.steps):
            x0 = jnp.asarray(train_x[batch_indices(settings.seed, step, n, settings.batch_size)])
            state, loss_arr = step_fn(state, x0, jnp.int32(step))
            if (step + 1) % log_every == 0 or step + 1 == settings.steps:
                loss = float(loss_arr)
                history.append([step + 1, loss])
                if log:
                    log(f"train: step {step + 1}/{settings.steps}, loss {loss:.4f}")
            if (step + 1) % settings.save_every == 0 and step + 1 < settings.steps:
                save_checkpoint(ckpt, state, step=step + 1, settings=identity, history=history)
            if progress:
                progress(1)
        step = settings.steps
    except KeyboardInterrupt:
        from diffcli.io.signals import saving_after_interrupt

        with saving_after_interrupt():
            save_checkpoint(ckpt, state, step=step, settings=identity, history=history)  # resume picks up here
        raise
    save_checkpoint(ckpt, state, step=settings.steps, settings=identity, history=history)
    seconds = time.perf_counter() - t0
    ema = state[1]
    info = {"dataset": dataset, "steps": settings.steps, "seed": settings.seed, "batch_size": settings.batch_size,
            "lr": settings.lr, "ema": settings.ema, "data": identity["data"], "final_loss": loss}
    save_model(out, ema, config, info)
    sigmas = log_sigma_grid()
    curve = loss_curve(ema, np.asarray(heldout_x, np.float32), sigmas, seed=settings.seed)
    stem = out[:-4] if out.endswith(".eqx") else out
    csv_path, json_path = write_loss_log(stem, sigmas, curve, info={"model": os.path.basename(out), "history": history})
    return {"model": out, "checkpoint": ckpt, "loss_csv": csv_path, "loss_json": json_path, "steps": settings.steps,
            "resumed_from": start, "final_loss": loss, "seconds": seconds, "config": config.to_json(),
            "history": history}
