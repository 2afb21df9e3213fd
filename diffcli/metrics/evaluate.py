"""Evaluate a samples file: fidelity to a reference run, memorisation, feature-space and distribution distances."""

from __future__ import annotations

import os

import numpy as np

from diffcli.errors import DiffcliError, UsageError
from diffcli.index.store import to_data_space
from diffcli.metrics import distribution, fidelity, frechet, gaussian, memorisation

FEATURE_SIGMA = 0.05  # the reference network sees clean samples at a low noise level when giving features


def check_samples(s: dict, name: str, *, need_seed: bool = False) -> None:
    """Refuse a samples dict that metrics cannot use (no rows, NaN, ids that do not fit, broken settings).

    `name` says which file in the sentence (e.g. "samples file 'OUT/samples.h5'"); `need_seed`: the rows are matched
    to a reference run, so the seed setting must be recorded.
    """
    x = np.asarray(s["samples"])
    if x.ndim < 2 or x.dtype.kind not in "fiu":
        raise DiffcliError(f"{name} holds samples of shape {x.shape} and dtype {x.dtype}, not numeric rows [n, ...].")
    if len(x) == 0:
        raise DiffcliError(f"{name} holds no samples.")
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    ids = np.asarray(s["ids"])
    if bad.any():
        first = ids[np.argmax(bad)] if ids.shape == (len(x),) else int(np.argmax(bad))
        raise DiffcliError(f"{name} holds {int(bad.sum())} of {len(x)} samples with NaN or infinite values "
                           f"(the first is sample id {first}).")
    if ids.ndim != 1 or len(ids) != len(x) or ids.dtype.kind not in "iu":
        raise DiffcliError(f"{name} has {ids.shape[0] if ids.ndim else 0} sample ids of dtype {ids.dtype} for "
                           f"{len(x)} samples; it needs one whole-number id per sample.")
    if len(np.unique(ids)) != len(ids):
        raise DiffcliError(f"{name} repeats sample ids, so its rows cannot be told apart.")
    settings = s.get("settings")
    if not isinstance(settings, dict):
        raise DiffcliError(f"{name} has a settings_json attribute that is not a JSON object of settings.")
    seed = settings.get("seed")
    if seed is None and need_seed:
        raise DiffcliError(f"{name} records no seed setting, so its rows cannot be matched to another run's noise.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise DiffcliError(f"{name} records the seed {seed!r}, which is not a whole number.")


def match_by_ids(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of two sample files that share an id (same seed and sample index): (ids, a rows, b rows)."""
    common, ia, ib = np.intersect1d(a["ids"], b["ids"], return_indices=True)
    if len(common) == 0:
        raise DiffcliError("the samples and the reference share no sample ids; draw both with the same seed and ids.")
    if a["settings"].get("seed") != b["settings"].get("seed"):
        raise DiffcliError(
            f"the samples used seed {a['settings'].get('seed')} and the reference seed {b['settings'].get('seed')}; "
            "compare runs from the same noise."
        )
    return common, a["samples"][ia], b["samples"][ib]


def reference_rows(train: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """At most `cap` training rows, a fixed random subset (the comparison set for distribution metrics)."""
    if len(train) <= cap:
        return train
    return train[np.sort(np.random.default_rng(seed).choice(len(train), cap, replace=False))]


def network_features(model_path: str, x: np.ndarray, shape, batch: int = 256) -> tuple[np.ndarray, str]:
    """Bottleneck features of the reference network for rows x, and the feature space's name."""
    import equinox as eqx
    import jax.numpy as jnp

    from diffcli.denoisers.neural import load_neural

    den = load_neural(model_path, tuple(shape))
    f = eqx.filter_jit(lambda d, v: d.features(v, FEATURE_SIGMA))
    rows = x.reshape(-1, *shape)
    out = [np.asarray(f(den, jnp.asarray(rows[i : i + batch]))) for i in range(0, len(rows), batch)]
    return (np.concatenate(out).astype(np.float64),
            f"reference-net-bottleneck({os.path.basename(model_path)}, sigma={FEATURE_SIGMA})")


def load_user_features(path: str, n_samples: int) -> tuple[np.ndarray, np.ndarray, str]:
    """User features: an .npz with arrays `samples` and `train` (rows of the samples file, then training rows)."""
    if not os.path.isfile(path):
        raise DiffcliError(f"features file '{path}' does not exist.")
    try:
        with np.load(path, allow_pickle=False) as z:
            fs, ft = np.asarray(z["samples"], np.float64), np.asarray(z["train"], np.float64)
    except (KeyError, ValueError, OSError, TypeError):
        raise DiffcliError(f"features file '{path}' must be an .npz holding "
                           "2-D arrays 'samples' and 'train'.") from None
    if fs.ndim != 2 or ft.ndim != 2 or fs.shape[1] != ft.shape[1]:
        raise DiffcliError(f"features file '{path}' must hold 2-D 'samples' and 'train' arrays of equal width.")
    if len(fs) != n_samples:
        raise DiffcliError(f"features file '{path}' has {len(fs)} sample rows but the samples file has {n_samples}.")
    return fs, ft, f"user:{os.path.basename(path)}"


def feature_space(x, ref, index, *, model=None, features=None, pca_k: int = 64):
    """(sample features, reference features, name): user file > reference network > whitened PCA of the index."""
    if features is not None:
        return load_user_features(features, len(x))
    if model is not None:
        fs, name = network_features(model, x, index.shape)
        return fs, network_features(model, ref, index.shape)[0], name
    fs = frechet.pca_whitened_features(x, index.mean, index.pca_components, index.pca_variances, k=pca_k)
    fr = frechet.pca_whitened_features(ref, index.mean, index.pca_components, index.pca_variances, k=pca_k)
    return fs, fr, f"pca-whitened-{fs.shape[1]}(index)"


def evaluate(samples: dict, *, reference: dict | None = None, index=None, model: str | None = None,
             features: str | None = None, max_reference: int = 5000, seed: int = 0) -> dict:
    """All metrics the inputs allow; scalar results at the top level, arrays under "arrays" (not for JSON)."""
    check_samples(samples, "the samples", need_seed=reference is not None)
    if reference is not None:
        check_samples(reference, "the reference", need_seed=True)
    x = np.asarray(samples["samples"], np.float32)
    images = x.ndim == 4
    out: dict = {"n_samples": int(len(x)), "arrays": {}}
    if reference is not None:
        ids, a, b = match_by_ids(samples, reference)
        fid = fidelity.fidelity(a, b, images=images)
        out["arrays"].update(per_sample_mse=fid.pop("per_sample_mse"), per_sample_r2=fid.pop("per_sample_r2"))
        out.update(fid)
    if index is None:
        if features is not None or model is not None:
            raise UsageError("feature-space metrics need the training set: pass --index FILE or --dataset SPEC.")
        return out
    flat = x.reshape(len(x), -1)
    if flat.shape[1] != index.dim:
        raise DiffcliError(f"samples of shape {x.shape[1:]} do not match "
                           f"the index's samples of shape {tuple(index.shape)}.")
    train = index.stored_rows()  # uint8 images stay uint8; metrics convert the rows they read
    mem = memorisation.memorisation(flat, train)
    out["arrays"].update(d1=mem.pop("d1"), d2=mem.pop("d2"), nearest=mem.pop("nearest"), memorized=mem.pop("memorized"))
    out.update(mem)
    if samples.get("labels") is not None:
        out["memorized_fraction_per_class"] = class_memorisation(flat, samples["labels"], train, index)
    ref = to_data_space(reference_rows(train, max_reference, seed))
    if len(flat) >= 2:
        fs, fr, name = feature_space(flat, ref, index, model=model, features=features)
        out.update(frechet.feature_distances(fs, fr, name=name, seed=seed))
    if index.kind == "vector":
        out.update(vector_metrics(flat, to_data_space(reference_rows(train, 2000, seed)), index, seed=seed))
    return out


def class_memorisation(flat: np.ndarray, labels, train: np.ndarray, index) -> dict:
    """Per-class memorised fractions of a conditional run's samples (samples.h5 `labels`), searched within each
    class's training rows; a labelled samples file needs a labelled index holding those classes."""
    labels = np.asarray(labels)
    if labels.shape != (len(flat),) or labels.dtype.kind not in "iu":
        raise DiffcliError(f"the samples' labels have shape {labels.shape}, not one class id per sample.")
    if index.labels is None:
        raise DiffcliError("the samples were drawn per class (--class) but the index has no labels; pass the index "
                           "they were drawn from.")
    try:
        return memorisation.memorisation_by_class(flat, labels, train, index.labels)
    except ValueError as exc:
        raise DiffcliError(f"per-class memorisation: {exc}.") from None


def vector_metrics(x: np.ndarray, ref: np.ndarray, index, *, seed: int) -> dict:
    """Sliced W2 and RBF MMD against training rows; mode weights and Gaussian closed forms when the target is known."""
    res = {"sliced_w2": distribution.sliced_w2(x, ref, seed=seed)}
    res.update(distribution.mmd_rbf(x, ref))
    g = index.gmm
    if g is not None:
        mw = distribution.mode_weight_error(x, g)
        res.update(mode_weight_tv=mw["mode_weight_tv"], mode_weight_max_error=mw["mode_weight_max_error"])
        if len(g["weights"]) == 1 and len(x) > x.shape[1]:
            mean = np.asarray(g["means"][0], np.float64)
            cov = float(g["stds"][0]) ** 2 * np.eye(len(mean))
            res.update(gaussian.gaussian_target_metrics(x, mean, cov))
    return res


def scalar_results(result: dict) -> dict:
    """The JSON-able part of an evaluation (everything but the per-sample arrays)."""
    return {k: v for k, v in result.items() if k != "arrays"}
