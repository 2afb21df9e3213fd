"""Figures by content: sample-grid geometry, class rows, the report's pairs and tables, plots' lines and labels."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from diffcli.io import images, plot
from diffcli.metrics import report


def _u8(x):
    return np.clip(np.rint((x + 1) * 127.5), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("res", "scale"), [(8, 12), (32, 3), (64, 2), (100, 1)])
def test_grid_cells_are_enlarged_by_an_integer_factor_to_about_96_px(tmp_path, res, scale):
    x = np.random.default_rng(res).uniform(-1, 1, (5, 3, res, res)).astype(np.float32)
    images.save_grid(tmp_path / "g.png", x, ncol=3)
    got = np.asarray(Image.open(tmp_path / "g.png"))
    cell, pad = res * scale, max(4, res * scale // 16)
    assert got.shape == (2 * (cell + pad) + pad, 3 * (cell + pad) + pad, 3)
    y0, x0 = pad + cell + pad, pad + (cell + pad)  # sample 4: second row, second column
    np.testing.assert_array_equal(got[y0: y0 + cell, x0: x0 + cell],
                                  _u8(x[4]).transpose(1, 2, 0).repeat(scale, 0).repeat(scale, 1))
    assert np.all(got[y0: y0 + cell, x0 + cell: x0 + cell + pad] == images.GAP_GREY)  # the gap
    assert np.all(got[y0: y0 + cell, x0 + 2 * cell + 2 * pad:] == images.GAP_GREY)  # the empty last cell


def test_grid_cap_and_columns():
    x = np.zeros((30, 1, 8, 8), np.float32)
    rows, _ = images.grid_layout(x, max_cells=10)
    assert [len(r) for r in rows] == [4, 4, 2] and rows[2] == [8, 9]
    rows, _ = images.grid_layout(x, ncol=7, max_cells=100)
    assert [len(r) for r in rows] == [7, 7, 7, 7, 2]


def test_conditional_grid_puts_one_class_per_row_with_its_name(tmp_path):
    labels = np.array([2, 0, 2, 1, 2, 0])
    x = np.stack([np.full((1, 8, 8), -1.0 + 0.3 * i) for i in range(6)]).astype(np.float32)
    rows, classes = images.grid_layout(x, labels=labels)
    assert classes == [0, 1, 2] and rows == [[1, 5], [3], [0, 2, 4]]
    rows, classes = images.grid_layout(x, labels=labels, ncol=2, max_cells=4)  # the cap drops whole rows
    assert classes == [0, 1] and rows == [[1, 5], [3]]
    images.save_grid(tmp_path / "c.png", x, labels=labels, label_names=["cat", "dog", "wild"])
    got = np.asarray(Image.open(tmp_path / "c.png"))
    cell, pad = 96, 6
    assert got.shape[0] == 3 * (cell + pad) + pad and got.ndim == 3
    name_w = got.shape[1] - (3 * (cell + pad) + pad)
    assert name_w > 20 and (got[:, :name_w] < 128).any()  # a white column with dark text
    y0 = pad + 2 * (cell + pad)  # third row, class 2: samples 0, 2, 4
    for q, i in enumerate((0, 2, 4)):
        x0 = name_w + pad + q * (cell + pad)
        assert np.all(got[y0: y0 + cell, x0: x0 + cell] == _u8(x[i, 0, 0, 0]))
    assert np.all(got[pad: pad + cell, name_w + pad + 2 * (cell + pad):][:, :cell] == images.GAP_GREY)  # class 0: 2


def test_line_figure_draws_one_line_per_series_with_labels():
    fig = plot.line_figure({"a": ([1, 10, 100], [1.0, 0.1, 0.01]), "b": ([1, 10], [0.0, 2.0])}, title="t",
                           xlabel="rounds", ylabel="error", hlines={"target": 1e-3})
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 3 and ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.get_lines()[1].get_xdata()) == 1  # non-positive values are left out on log axes
    assert ax.get_xlabel() == "rounds" and ax.get_ylabel() == "error" and ax.get_title(loc="left") == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "target"]
    assert min(t.get_fontsize() for t in ax.get_xticklabels() + [ax.xaxis.label]) >= 10


def test_loss_figure_marks_the_chosen_sigmas_and_the_peers():
    sigma = np.geomspace(80, 0.002, 12)
    loss = 0.3 / (1 + 1 / sigma**2)
    chosen = np.array([80, 10, 1, 0.1, 0.002, 0.0])
    fig = plot.loss_figure(sigma, loss, chosen, smoothed=loss, stderr=0.01 * loss,
                           peers={"edm": np.geomspace(80, 0.002, 5).tolist() + [0.0], "log-snr": [80, 1, 0.0]},
                           name="las", title="las, 5 steps")
    top, bottom = fig.axes
    marks = [ln for ln in top.get_lines() if ln.get_label().startswith("las sigmas")]
    assert len(marks) == 1 and len(marks[0].get_xdata()) == 5
    assert len(bottom.get_lines()) == 3  # one row of ticks per schedule
    assert [t.get_text() for t in bottom.get_yticklabels()] == ["las", "edm", "log-snr"]
    assert [len(ln.get_xdata()) for ln in bottom.get_lines()] == [5, 5, 2]
    assert "σ" in bottom.get_xlabel() and top.get_ylabel()


def test_concentration_figure_has_counts_and_bounds_panels():
    summary = [{"sigma": s, "support_mean": 5.0 * s, "participation_mean": 2.0 * s + 1, "golden_k_mean": 40.0,
                "bound_max": 1e-3 * s, "tail_mass_max": 1e-4 * s} for s in (0.1, 1.0, 10.0)]
    fig = plot.concentration_figure({"summary": summary, "dataset": "digits", "n": 100, "k_max": 64,
                                     "denoiser": "golden", "schedule": "vp-leading", "steps": 3, "num_samples": 2})
    top, bottom = fig.axes
    assert len(top.get_lines()) == 5 and len(bottom.get_lines()) == 2  # 3 curves + k_max + N; bound + tail
    assert "digits" in top.get_title(loc="left") and top.get_yscale() == "log"


@pytest.mark.parametrize("fmt", ["pdf", "svg"])
def test_save_figure_writes_png_and_the_other_format_beside_it(tmp_path, fmt):
    fig = plot.line_figure({"a": ([1, 2], [1, 2])}, title="t", xlabel="x", ylabel="y")
    paths = plot.save_figure(fig, tmp_path / "p.png", formats=plot.figure_formats(fmt))
    assert paths == [str(tmp_path / "p.png"), str(tmp_path / f"p.{fmt}")]
    with Image.open(paths[0]) as im:
        assert im.size == (int(8.0 * plot.DPI), int(5.0 * plot.DPI))
    assert (tmp_path / f"p.{fmt}").read_bytes()[:5] in (b"%PDF-", b"<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["p.png", f"p.{fmt}"])  # no .part left behind


def test_report_pairs_ratios_and_tables(tmp_path):
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, (6, 1, 8, 8)).astype(np.float32)
    ratios = np.array([0.0, 0.5, 0.2, 0.9, 0.34, 0.1])
    mosaic, places = report.pairs_mosaic(s, s[::-1], ratios, per_row=4)
    cell = 96
    pair_w = 2 * cell + report.INNER_PX + 2 * report.FRAME_PX
    assert mosaic.shape[1] == 4 * pair_w + 3 * report.OUTER_PX and len(places) == 6
    y0 = report.HEAD_PX + report.FRAME_PX
    np.testing.assert_array_equal(mosaic[y0: y0 + cell, report.FRAME_PX: report.FRAME_PX + cell, 0],
                                  _u8(s[0, 0]).repeat(12, 0).repeat(12, 1))
    assert tuple(mosaic[report.HEAD_PX, 0]) == report.COPY_RGB  # sample 0 is a copy: red frame
    x1 = pair_w + report.OUTER_PX
    assert tuple(mosaic[report.HEAD_PX, x1]) == report.PLAIN_RGB  # sample 1 is not

    scalars = {"samples": "/x/samples.h5", "n_samples": 6, "memorized_fraction": 0.5, "mse": 0.01, "r2": 0.9,
               "frechet": 1.5, "d1_per_dim": {"min": 0.0, "max": 0.5}}
    fig = report.report_figure(scalars, samples=s, nearest=s[::-1], ratios=ratios)
    texts = [t.get_text() for t in fig.texts]
    ratio_texts = [t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("d1/d2")]
    assert len(ratio_texts) == 6 and sum(t.endswith("copy") for t in ratio_texts) == 3
    assert "comparison with the reference run (same noise)" in texts and "metrics" in texts
    for name in ("mse", "r2", "frechet", "memorized_fraction"):
        assert name in texts
    assert "samples.h5" in texts and report.MEANINGS["frechet"].split()[0] in " ".join(texts)
    paths = report.write_report(tmp_path / "r.png", scalars, samples=s, nearest=s[::-1], ratios=ratios,
                                html_path=tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert len(paths) == 2 and page.count("data:image/png;base64,") == 12 and page.count("class='pair copy'") == 3
    assert "<td>frechet</td>" in page and "Comparison with the reference run" in page


def test_report_without_images_is_the_table_alone():
    fig = report.report_figure({"n_samples": 3, "sliced_w2": 0.2})
    assert not fig.axes and "sliced_w2" in [t.get_text() for t in fig.texts]


def test_matplotlib_is_imported_only_to_draw():
    code = ("import sys, diffcli, diffcli.io.plot, diffcli.io.images, diffcli.metrics.report, diffcli.cli; "
            "from diffcli.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['sample', '--help']); assert r.exit_code == 0, r.output; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
