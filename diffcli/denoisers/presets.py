"""The GoldDiff configs' per-dataset presets: golden subset sizes and PCA-locality mask thresholds.

This table is the one home of those numbers. recipes/golddiff.toml states the same values under [datasets.NAME]
(tests/test_golden.py checks that they agree); a run without a recipe gets them from here, by the dataset name the
index records (`Index.dataset_name`). The recipe reproduces the paper, so it also asks for the paper's own method
(PAPER_METHOD) where diffcli's defaults differ from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    k_min: int | None  # golden subset size at low noise; None: the N-relative rule of `default_sizes`
    k_max: int | None  # ... at high noise
    mask_threshold: float


# ImageNet-64 is per class (about 1200 images a class). digits (8x8 grey) follows MNIST's threshold and shapes
# (coloured synthetic images) CIFAR-10's; their sizes follow the N-relative rule (shapes' N is a parameter).
PRESETS = {
    "mnist": Preset(3000, 6000, 0.02),
    "fashion-mnist": Preset(3000, 6000, 0.02),
    "cifar10": Preset(2500, 5000, 0.03),
    "celebahq": Preset(1500, 3000, 0.03),
    "afhq": Preset(1000, 2000, 0.04),
    "imagenet64": Preset(60, 120, 0.02),
    "digits": Preset(None, None, 0.02),
    "shapes": Preset(None, None, 0.03),
}
FALLBACK_THRESHOLD = 0.03  # any other dataset: the middle of the published range
# GoldDiff's method as recipes/golddiff.toml states it at its top level: a PCA-locality base and the paper's
# estimator (a random pool, one softmax over the subset), not diffcli's default stratified estimator
PAPER_METHOD = {"denoiser": "golden", "golden_base": "pca-local", "golden_estimator": "paper"}


def _preset(dataset: str | None) -> Preset | None:
    return PRESETS.get(dataset.lower()) if dataset else None


def default_sizes(dataset: str | None, n: int, *, per_class: bool = False) -> tuple[int, int]:
    """(k_min, k_max) for a dataset name and N: the preset's, else k_max = N/10 (the papers' ratio), at least 64,
    and k_min = k_max/2; never above N.

    per_class (a class-conditional index, N = N_c the class's rows): the paper's conditional rule, k_min = N_c/20
    and k_max = N_c/10 (at least 1), whatever the dataset's unconditional preset."""
    if per_class:
        return max(1, round(n / 20)), max(1, round(n / 10))
    p = _preset(dataset)
    k_min, k_max = (p.k_min, p.k_max) if p is not None else (None, None)
    if k_max is None:
        k_max = max(64, round(n / 10))
        k_min = max(1, k_max // 2)
    k_max = int(min(k_max, n))
    return int(min(k_min, k_max)), k_max


def default_threshold(dataset: str | None) -> float:
    """The PCA-locality mask threshold for a dataset name (FALLBACK_THRESHOLD for one without a preset)."""
    p = _preset(dataset)
    return FALLBACK_THRESHOLD if p is None else p.mask_threshold


def recipe_tables() -> dict[str, dict]:
    """The presets as recipes/golddiff.toml writes them: {name: {golden_k_min, golden_k_max, mask_threshold}}."""
    out = {}
    for name, p in PRESETS.items():
        sizes = {} if p.k_max is None else {"golden_k_min": p.k_min, "golden_k_max": p.k_max}
        out[name] = {**sizes, "mask_threshold": p.mask_threshold}
    return out
