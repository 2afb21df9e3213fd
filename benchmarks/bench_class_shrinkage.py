"""Which class-shrinkage intensity serves a class best: fixed lam against the Ledoit-Wolf closed form.

For each class c of digits (1797 images, D = 64) and a training size N_c per class (the rows a class index holds;
small N_c is the ImageNet regime N_c << D), rows are split at random into a class training part and held-out
rows of the class (the rest); the global covariance is that of all classes' training parts. With
Sigma' = (1 - lam) Sigma_c + lam Sigma_global (diffcli/index/shrinkage.py), two held-out scores, both exact in
float64 (no sampled noise):
- Wiener denoising MSE per pixel of the class's held-out rows, averaged over sigma in SIGMAS: for y, the expected
  error of D(y + sigma e) = mu_c + G (x - mu_c), G = Sigma' (Sigma' + sigma^2 I)^-1, is
  ||(G - I)(y - mu_c)||^2 + sigma^2 ||G||_F^2;
- Gaussian negative log-likelihood per pixel of the held-out rows under N(mu_c, Sigma' + FLOOR I) (digits has pixels
  that never vary, so a floor keeps the likelihood finite for every lam).
Scores are averaged over the 10 classes and REPEATS random splits. Run: python -m benchmarks.bench_class_shrinkage
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import numpy as np

from diffcli.index.shrinkage import ledoit_wolf_intensity, shrink_covariance
from diffcli.index.stats import pca_stats

HERE = os.path.dirname(os.path.abspath(__file__))
SIGMAS = (0.1, 0.2, 0.5, 1.0, 2.0)
FLOOR = 1e-3
LAMS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def wiener_mse(cov, mean, held):
    """Mean over SIGMAS of the expected per-pixel Wiener error on held-out rows [m, D] (exact, float64)."""
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0, None)
    z = (held - mean) @ vecs  # coordinates in the eigenbasis
    out = []
    for s in SIGMAS:
        g = vals / (vals + s * s)
        bias = np.mean(np.sum(((g - 1) * z) ** 2, axis=1))
        out.append((bias + s * s * np.sum(g * g)) / cov.shape[0])
    return float(np.mean(out))


def gaussian_nll(cov, mean, held):
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0, None) + FLOOR
    z = (held - mean) @ vecs
    quad = np.sum(z * z / vals, axis=1)
    return float(np.mean(0.5 * (quad + np.sum(np.log(vals)) + cov.shape[0] * np.log(2 * np.pi))) / cov.shape[0])


def dense(stats, dim):
    u, v = stats["components"].astype(np.float64), stats["variances"].astype(np.float64)
    return (u.T * v) @ u


def run(sizes, repeats):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.reshape(len(bunch.images), -1) * (255 / 16)).round().astype(np.uint8)
    data, y = x.astype(np.float64) / 127.5 - 1.0, bunch.target
    dim = data.shape[1]
    rows = []
    for n_c in sizes:
        scores = {key: {"mse": [], "nll": [], "lam": []} for key in (*map(str, LAMS), "ledoit-wolf")}
        for rep in range(repeats):
            rng = np.random.default_rng(rep)
            train_ids, held_ids = {}, {}
            for c in range(10):
                ids = rng.permutation(np.flatnonzero(y == c))
                take = min(n_c, len(ids) - 20)  # at least 20 held-out rows per class
                train_ids[c], held_ids[c] = ids[:take], ids[take:]
            glob = pca_stats(data[np.concatenate(list(train_ids.values()))])
            for c in range(10):
                rows_c, held = data[train_ids[c]], data[held_ids[c]]
                own = pca_stats(rows_c)
                lw = ledoit_wolf_intensity(rows_c, glob)
                for key, lam in [*((str(v), v) for v in LAMS), ("ledoit-wolf", lw)]:
                    st = shrink_covariance(own, glob, lam, dim)
                    cov = dense(st, dim)
                    scores[key]["mse"].append(wiener_mse(cov, st["mean"].astype(np.float64), held))
                    scores[key]["nll"].append(gaussian_nll(cov, st["mean"].astype(np.float64), held))
                    scores[key]["lam"].append(lam)
        for key, s in scores.items():
            rows.append({"n_c": n_c, "rule": key, "lam_mean": float(np.mean(s["lam"])),
                         "wiener_mse": float(np.mean(s["mse"])), "gaussian_nll": float(np.mean(s["nll"]))})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="8,16,32,64,150")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "class_shrinkage.json"))
    args = ap.parse_args()
    rows = run([int(s) for s in args.sizes.split(",")], args.repeats)
    print(f"{'N_c':>5} {'rule':>12} {'mean lam':>9} {'wiener MSE':>11} {'gauss NLL':>10}")
    for n_c in sorted({r["n_c"] for r in rows}):
        part = [r for r in rows if r["n_c"] == n_c]
        best_mse = min(r["wiener_mse"] for r in part)
        best_nll = min(r["gaussian_nll"] for r in part)
        for r in part:
            mark = ("*" if r["wiener_mse"] == best_mse else " ") + ("*" if r["gaussian_nll"] == best_nll else " ")
            print(f"{n_c:>5} {r['rule']:>12} {r['lam_mean']:>9.3f} {r['wiener_mse']:>11.5f} "
                  f"{r['gaussian_nll']:>10.4f} {mark}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": f"{platform.processor() or platform.machine()}, 2-core AMD EPYC, numpy float64",
                   "dataset": "digits (sklearn, 1797 x 8x8)", "sigmas": SIGMAS, "floor": FLOOR,
                   "repeats": args.repeats, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
