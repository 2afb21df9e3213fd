"""PNG grids: each sample lands, enlarged, in its own cell, separated by a visible gap."""

import numpy as np
from PIL import Image

from diffcli.io.images import save_grid, tile


def test_tile_places_cells_row_major_on_grey():
    imgs = np.arange(3 * 2 * 2).reshape(3, 2, 2, 1).astype(np.uint8)
    canvas = tile(imgs, ncol=2, pad=1)
    assert canvas.shape == (2 * 3 + 1, 2 * 3 + 1, 1)
    np.testing.assert_array_equal(canvas[1:3, 1:3], imgs[0])
    np.testing.assert_array_equal(canvas[1:3, 4:6], imgs[1])
    np.testing.assert_array_equal(canvas[4:6, 1:3], imgs[2])
    assert np.all(canvas[4:6, 4:6] == 128) and np.all(canvas[0] == 128) and np.all(canvas[:, 3] == 128)


def test_save_grid_enlarges_small_images_with_a_visible_gap(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    save_grid(tmp_path / "g.png", x, ncol=2)
    got = np.asarray(Image.open(tmp_path / "g.png"))
    scale, pad = 12, 6  # 8 px cells are enlarged by 12 to 96 px; the gap is 1/16 of the cell
    assert got.shape == (2 * (96 + pad) + pad,) * 2
    u8 = np.clip(np.rint((x + 1) * 127.5), 0, 255).astype(np.uint8)
    cell = got[pad + 96 + pad: pad + 96 + pad + 96, pad: pad + 96]  # sample 2: second row, first column
    np.testing.assert_array_equal(cell, u8[2, 0].repeat(scale, 0).repeat(scale, 1))
