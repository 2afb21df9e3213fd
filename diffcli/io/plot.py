"""Every plot diffcli draws: matplotlib figures (Agg canvas, no pyplot, no global rc changes) saved as PNG (+ PDF/SVG).

The `*_figure` functions are pure: data in, a `matplotlib.figure.Figure` out (tests count its lines); `save_figure`
writes one figure through `atomic_path`. matplotlib is imported inside the functions, so `import diffcli` and the
commands that draw nothing never load it.
"""

from __future__ import annotations

import os

import numpy as np

from diffcli.io.atomic import atomic_path

DPI = 120  # pixels per inch of the PNG; with the point sizes below, text is 17-20 px high
FORMATS = ("png", "pdf", "svg")
TITLE_PT, LABEL_PT, TICK_PT, LEGEND_PT = 12, 11, 10, 10
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
STYLES = ("-", "--", "-.", ":")
SIGMA_LABEL = "noise level σ (data units; images in [-1, 1])"


def figure_formats(extra: str | None = None) -> tuple[str, ...]:
    """("png",) plus `extra` (a --figure-format value: png, pdf or svg); an unknown format is a usage error."""
    if extra is None or extra == "png":
        return ("png",)
    if extra not in FORMATS:
        from diffcli.errors import UsageError

        raise UsageError(f"unknown --figure-format '{extra}'; choose from: {', '.join(FORMATS)}.")
    return ("png", extra)


def new_figure(width: float = 8.0, height: float = 5.0, *, layout: str | None = "constrained"):
    """An empty Figure (inches) on its own Agg canvas (no pyplot state), laid out by `layout` (None: by hand)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, *, formats=("png",)) -> list[str]:
    """Write `fig` to `path` (PNG) and, per further format in `formats`, beside it (same stem, .pdf / .svg).

    Returns the paths written. Dates are left out of PDF/SVG metadata, so the same figure gives the same file.
    """
    path = os.fspath(path)
    stem = os.path.splitext(path)[0]
    written = []
    for fmt in dict.fromkeys(formats):
        if fmt not in FORMATS:
            raise ValueError(f"unknown figure format '{fmt}'; choose from: {', '.join(FORMATS)}")
        target = path if fmt == "png" else f"{stem}.{fmt}"
        meta = {"png": None, "pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}}[fmt]
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=meta, facecolor="white")
        written.append(target)
    return written


def style_axes(ax, *, title: str = "", xlabel: str = "", ylabel: str = "", logx: bool = True, logy: bool = True):
    """Log scales, labels at readable sizes and a light major/minor grid."""
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=TITLE_PT, loc="left")
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=LABEL_PT)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=LABEL_PT)
    ax.tick_params(labelsize=TICK_PT)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def _positive(x, y, logx: bool, logy: bool):
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    if logx:
        keep &= x > 0
    if logy:
        keep &= y > 0
    order = np.argsort(x[keep], kind="stable")
    return x[keep][order], y[keep][order]


def legend(ax, n: int) -> None:
    """A legend inside the axes for a few series, beside them for many."""
    if n == 0:
        return
    if n <= 4:
        ax.legend(fontsize=LEGEND_PT, framealpha=0.9)
    else:
        ax.legend(fontsize=LEGEND_PT, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def line_figure(series: dict, *, title: str, xlabel: str, ylabel: str, logx: bool = True, logy: bool = True,
                hlines: dict | None = None, width: float = 8.0, height: float = 5.0):
    """series: name -> (x, y), one line with markers each (non-positive values are left out on log axes);
    hlines: name -> y, dashed grey reference levels. Returns the Figure (one Line2D per series and level)."""
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    for i, (name, (x, y)) in enumerate(series.items()):
        xs, ys = _positive(x, y, logx, logy)
        ax.plot(xs, ys, STYLES[(i // len(COLOURS)) % len(STYLES)], color=COLOURS[i % len(COLOURS)], marker="o",
                markersize=4, linewidth=1.6, label=name)
    for name, level in (hlines or {}).items():
        ax.axhline(level, color="0.45", linestyle=":", linewidth=1.2, label=name)
    style_axes(ax, title=title, xlabel=xlabel, ylabel=ylabel, logx=logx, logy=logy)
    legend(ax, len(series) + len(hlines or {}))
    return fig


def save_line_plot(path, series: dict, *, title: str = "", xlabel: str = "", ylabel: str = "", logx: bool = True,
                   logy: bool = True, hlines: dict | None = None, formats=("png",)) -> list[str]:
    """`line_figure` written to `path` (+ the other `formats` beside it)."""
    fig = line_figure(series, title=title, xlabel=xlabel, ylabel=ylabel, logx=logx, logy=logy, hlines=hlines)
    return save_figure(fig, path, formats=formats)


def loss_figure(sigma, loss, schedule, *, smoothed=None, stderr=None, peers: dict | None = None,
                name: str = "fitted", title: str = ""):
    """The loss curve against sigma (log-log) with the schedule's sigmas marked on it, and below it one row of ticks
    per schedule (the fitted one, then each of `peers`: name -> sigmas) to compare where the steps fall."""
    sigma = np.asarray(sigma, np.float64)
    order = np.argsort(sigma)
    sigma, loss = sigma[order], np.asarray(loss, np.float64)[order]
    ref = loss if smoothed is None else np.asarray(smoothed, np.float64)[order]
    rows = {name: schedule, **(peers or {})}
    fig = new_figure(8.0, 5.2 + 0.28 * len(rows))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3.0, 0.45 + 0.3 * len(rows)])
    if stderr is not None:
        err = np.asarray(stderr, np.float64)[order]
        ok = np.isfinite(err) & (loss - err > 0)
        if ok.any():
            top.fill_between(sigma[ok], (loss - err)[ok], (loss + err)[ok], color="0.8", label="± 1 std. error")
    top.plot(*_positive(sigma, loss, True, True), color="0.45", marker=".", markersize=5, linewidth=1.2,
             label="measured loss")
    if smoothed is not None:
        top.plot(*_positive(sigma, ref, True, True), color=COLOURS[0], linewidth=2.0, label="smoothed (isotonic)")
    s = np.asarray(schedule, np.float64)
    s = np.sort(s[s > 0])
    on_curve = np.exp(np.interp(np.log(s), np.log(sigma), np.log(np.maximum(ref, 1e-300))))
    for v in s:
        top.axvline(v, color=COLOURS[1], alpha=0.18, linewidth=1.0)
    top.plot(s, on_curve, linestyle="none", marker="o", markersize=7, color=COLOURS[1],
             label=f"{name} sigmas ({len(s)} > 0)")
    style_axes(top, title=title, ylabel="x0-prediction MSE per dimension")
    top.legend(fontsize=LEGEND_PT, loc="lower right", framealpha=0.9)
    for i, sig in enumerate(rows.values()):
        v = np.asarray(sig, np.float64)
        v = v[v > 0]
        colour = COLOURS[1] if i == 0 else COLOURS[(i + 1) % len(COLOURS)]
        bottom.plot(v, np.full(len(v), i), linestyle="none", marker="|", markersize=14, markeredgewidth=2.2,
                    color=colour)
    bottom.set_yticks(range(len(rows)), list(rows), fontsize=TICK_PT)
    bottom.set_ylim(len(rows) - 0.5, -0.5)
    style_axes(bottom, xlabel=SIGMA_LABEL, logy=False)
    bottom.grid(False, axis="y")
    bottom.set_ylabel("schedule", fontsize=LABEL_PT)
    return fig


def save_loss_plot(path, sigma, loss, schedule, *, smoothed=None, stderr=None, peers=None, name: str = "fitted",
                   title: str = "", formats=("png",)) -> list[str]:
    """`loss_figure` written to `path` (+ the other `formats`)."""
    fig = loss_figure(sigma, loss, schedule, smoothed=smoothed, stderr=stderr, peers=peers, name=name, title=title)
    return save_figure(fig, path, formats=formats)


def concentration_figure(result: dict):
    """GoldDiff posterior concentration against sigma (log-log): effective support, participation ratio and golden k
    (training images, means over trajectories), and below, the golden subset's certified tail bound and realised
    tail mass (worst trajectory)."""
    s = result["summary"]
    sig = [r["sigma"] for r in s]
    fig = new_figure(8.5, 7.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    counts = {f"effective support ({1 - result.get('support_eps', 1e-3):g} of the mass)": "support_mean",
              "participation ratio 1 / Σ w²": "participation_mean", "golden subset size k": "golden_k_mean"}
    for i, (label, key) in enumerate(counts.items()):
        if key in s[0]:
            top.plot(*_positive(sig, [r[key] for r in s], True, True), color=COLOURS[i], marker="o", markersize=5,
                     linewidth=1.8, label=label)
    for label, key, style in (("k_max", "k_max", "--"), ("N (training images)", "n", ":")):
        if result.get(key):
            top.axhline(result[key], color="0.45", linestyle=style, linewidth=1.1, label=f"{label} = {result[key]}")
    style_axes(top, ylabel="training images (count)",
               title=f"posterior concentration: {result.get('dataset')} (N = {result.get('n')}), "
                     f"{result.get('denoiser')} denoiser\n{result.get('schedule')} schedule, {result.get('steps')} "
                     f"steps, {result.get('num_samples')} trajectories (means)")
    top.legend(fontsize=LEGEND_PT, loc="upper left", framealpha=0.9)
    tails = {"certified tail bound (max)": ("bound_max", COLOURS[3]),
             "realised tail mass (max)": ("tail_mass_max", COLOURS[4])}
    drawn = 0
    for label, (key, colour) in tails.items():
        if key in s[0]:
            x, y = _positive(sig, [r[key] for r in s], True, True)
            if len(x):
                bottom.plot(x, y, color=colour, marker="s", markersize=4, linewidth=1.6, label=label)
                drawn += 1
    style_axes(bottom, xlabel=SIGMA_LABEL, ylabel="posterior mass left out")
    if drawn:
        bottom.legend(fontsize=LEGEND_PT, loc="best", framealpha=0.9)
    else:
        bottom.text(0.5, 0.5, "no positive tail mass or bound", transform=bottom.transAxes, ha="center",
                    fontsize=LABEL_PT)
    return fig
