"""The 8x8 handwritten digits bundled with scikit-learn (1797 real images): the embedded default dataset."""

import numpy as np

from diffcli.data.base import split_arrays
from diffcli.data.spec import check_params


def load(params, *, root=None, limit=None):
    """Digits scaled from 0..16 to uint8 0..255 (data space [-1, 1]), shape [N, 1, 8, 8], labels 0..9."""
    check_params("digits", params, ())
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return split_arrays("digits", "digits", "image", images, labels, info={"source": "sklearn.datasets.load_digits"})
