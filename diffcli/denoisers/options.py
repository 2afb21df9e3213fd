"""Settings a denoiser factory may read; each factory uses the fields it needs and ignores the rest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DenoiserOptions:
    sigmas: np.ndarray | None = None  # the schedule the denoiser will be called on (for per-step precomputation)
    chunk_size: int = 2048  # rows of the index per streamed chunk (empirical and friends)
    seed: int = 0
    base: str = "pca-local"  # golden: the denoiser whose weights it restricts
    mask_threshold: float | None = None  # pca-local: None = the dataset's default
    golden_k_min: int | None = None
    golden_k_max: int | None = None
    golden_tol: float | None = None
    golden_coarse: bool = False  # golden: use the clustered coarse stage of the index
    golden_nprobe: int | None = None
    els_patch_sizes: tuple[int, ...] | None = None
    model_path: str | None = None  # neural: a trained model file
