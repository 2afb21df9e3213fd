"""Index rows stay uint8 on the device (converted to float32 a chunk at a time inside the kernels): the full-scan
denoisers built from the stored rows agree with the same denoisers over float32 data-space rows, and hold no float32
[N, D] copy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers import build_denoiser
from diffcli.denoisers.options import PcaLocalOptions, StreamOptions
from diffcli.denoisers.rows import half_sq_norms, host_float, to_float
from diffcli.index.store import to_data_space
from diffcli.sample.batches import generate
from diffcli.schedules import get_schedule
from diffcli.solvers import get_solver
from tests.helpers.indexes import make_index

EPS = np.finfo(np.float32).eps


@pytest.fixture(scope="module")
def index():
    return make_index(n=150, shape=(1, 8, 8), seed=3)


def as_float_index(index):
    """The same index with float32 data-space rows: what every denoiser held before rows stayed uint8."""
    import dataclasses

    return dataclasses.replace(index, images=to_data_space(index.images).reshape(index.images.shape))


def options(name, sigmas):
    cls = PcaLocalOptions if name == "pca-local" else StreamOptions
    return cls(chunk_size=32, sigmas=sigmas)


def float_leaves(denoiser):
    return [a for a in jax.tree.leaves(denoiser) if isinstance(a, jax.Array) and a.dtype == jnp.float32]


def test_conversion_in_the_kernel_is_the_index_conversion():
    stored = np.arange(256, dtype=np.uint8).reshape(4, 64)
    want = to_data_space(stored)
    np.testing.assert_array_equal(host_float(stored), want)
    np.testing.assert_allclose(np.asarray(jax.jit(to_float)(jnp.asarray(stored))), want, rtol=0, atol=2 * EPS)
    ok = np.array([True, True, True, False])
    half = half_sq_norms(stored, ok)
    np.testing.assert_allclose(half[:3], 0.5 * (want[:3].astype(np.float64) ** 2).sum(1), rtol=EPS)
    assert half[3] == np.inf


def posterior_tolerance(index, x, sigma):
    """An eps-based bound for two compilations of one posterior: logits |d| / 2 sigma^2 carry a few eps of relative
    error, which moves the (convex) weights by as much relative to a value range of 2 in [-1, 1]."""
    rows = to_data_space(index.images).astype(np.float64)
    d = ((x.reshape(len(x), 1, -1).astype(np.float64) - rows[None]) ** 2).sum(-1)
    return 8 * EPS * (1 + d.max() / (2 * sigma**2)) * 2


def check_same_denoiser(index, name, sigmas=None, sample=False):
    stored = build_denoiser(name, index, options(name, sigmas))
    floats = build_denoiser(name, as_float_index(index), options(name, sigmas))
    n, dim = index.n, index.dim
    assert any(a.dtype == jnp.uint8 and a.size >= n * dim for a in jax.tree.leaves(stored))
    assert all(a.size < n * dim for a in float_leaves(stored))  # no float32 [N, D] copy on the device
    assert any(a.size >= n * dim for a in float_leaves(floats))
    x = np.random.default_rng(0).standard_normal((3, *index.shape)).astype(np.float32)
    for sigma in (0.1, 1.0, 10.0):
        got, want = np.asarray(stored(x, sigma)), np.asarray(floats(x, sigma))
        np.testing.assert_allclose(got, want, rtol=0, atol=posterior_tolerance(index, x, sigma))
    if sample:
        run = dict(solver=get_solver("euler"), sigmas=sigmas, shape=index.shape, ids=np.arange(3), seed=0,
                   batch_size=3, solver_options={})
        a, b = generate(denoiser=stored, **run).samples, generate(denoiser=floats, **run).samples
        # both runs end on rows of the index (sigma_min 0.002): the same rows, to a few eps
        np.testing.assert_allclose(a, b, rtol=0, atol=16 * EPS)


@pytest.mark.parametrize("name", ["empirical"])
def test_uint8_rows_sample_as_float_rows_do(index, name):
    check_same_denoiser(index, name, get_schedule("edm", 3), sample=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["empirical-sharded", "nearest", "pca-local"])
def test_uint8_rows_give_the_float_posterior(index, name):
    check_same_denoiser(index, name, get_schedule("edm", 3), sample=True)


SHARDED_SCRIPT = """
import jax, numpy as np
from tests.helpers.indexes import make_index
from diffcli.denoisers.empirical import EmpiricalDenoiser
from diffcli.index.store import to_data_space
from diffcli.parallel.denoiser import ShardedEmpiricalDenoiser
assert jax.device_count() == 4
index = make_index(n=150, seed=3)
sharded = ShardedEmpiricalDenoiser.from_data(index.images, chunk=16)
assert sharded.chunks.dtype == np.uint8 and len(sharded.chunks.sharding.device_set) == 4
one = EmpiricalDenoiser.from_data(to_data_space(index.images), chunk=16)
x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
print(*(float(np.abs(np.asarray(sharded(x, s)) - np.asarray(one(x, s))).max()) for s in (0.1, 1.0, 10.0)))
"""


@pytest.mark.slow
def test_uint8_rows_sharded_over_four_devices_give_the_float_posterior(index):
    import os
    import subprocess
    import sys

    from tests.helpers.multidevice import ROOT, with_devices

    env = dict(os.environ, XLA_FLAGS=with_devices(4), JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    x = np.random.default_rng(0).standard_normal((3, *index.shape)).astype(np.float32)
    gaps = [float(v) for v in out.stdout.strip().splitlines()[-1].split()]
    for gap, sigma in zip(gaps, (0.1, 1.0, 10.0), strict=True):
        assert gap <= posterior_tolerance(index, x, sigma)


@pytest.mark.parametrize("estimator", ["paper", pytest.param("stratified", marks=pytest.mark.slow)])
def test_golden_keeps_uint8_rows_and_gives_the_float_subset_mean(index, estimator):
    """Golden gathers its candidates from the uint8 rows (and streams them for its moments): no float32 [N, D] copy,
    and the same subset posterior as over float32 rows, for the same key."""
    from diffcli.denoisers.golden import build
    from diffcli.denoisers.options import GoldenOptions

    opts = GoldenOptions(golden_base="empirical", golden_k_min=30, golden_k_max=60, golden_estimator=estimator)
    stored, floats = build(index, opts), build(as_float_index(index), opts)
    assert stored.rows.data.dtype == jnp.uint8 and floats.rows.data.dtype == jnp.float32
    # the plan (masks, moments) holds no float32 rows [>= N, D] either; 8 x 8 images are their own 16 x 16 proxies
    assert not any(a.ndim == 2 and a.shape[0] >= index.n and a.shape[1] == index.dim
                   for a in float_leaves(stored.plan))
    x = np.random.default_rng(1).standard_normal((3, *index.shape)).astype(np.float32)
    key = jax.random.split(jax.random.PRNGKey(5), 3)
    for sigma in (0.3, 3.0):
        got, want = np.asarray(stored(x, sigma, key=key)), np.asarray(floats(x, sigma, key=key))
        np.testing.assert_allclose(got, want, rtol=0, atol=posterior_tolerance(index, x, sigma))


@pytest.fixture(scope="module")
def index_file(tmp_path_factory):
    from diffcli.data import stream_dataset
    from diffcli.index.build import build_index

    path = tmp_path_factory.mktemp("mapped") / "shapes.h5"
    return build_index(stream_dataset("shapes:res=16,n=160,classes=8"), path)


def test_a_large_index_is_mapped_and_reaches_the_cpu_device_uncopied(index_file, monkeypatch):
    """Rows above the size threshold are a read-only map of the file; the full scan's device array is that map
    (no copy), and every denoiser gives bit for bit what it gives over rows read into memory."""
    from diffcli.denoisers.options import GoldenOptions
    from diffcli.index import open_index, store

    in_memory = open_index(index_file)
    monkeypatch.setattr(store, "MAP_ROWS_FROM", 0)
    mapped = open_index(index_file)
    for name in ("images", "proxy"):
        arr = getattr(mapped, name)
        assert isinstance(arr, np.memmap) and not arr.flags.writeable
        np.testing.assert_array_equal(arr, getattr(in_memory, name))
    assert not isinstance(in_memory.images, np.memmap)
    with pytest.raises(ValueError):
        mapped.images[0, 0, 0, 0] = 1  # nothing can write the shared rows

    sigmas = get_schedule("edm", 4)
    x = np.random.default_rng(0).standard_normal((3, *mapped.shape)).astype(np.float32)
    n = mapped.n
    for name, opts in (("empirical", StreamOptions(chunk_size=n, sigmas=sigmas)),
                       ("golden", GoldenOptions(sigmas=sigmas, golden_k_min=8, golden_k_max=16))):
        den_map = build_denoiser(name, mapped, opts)
        den_mem = build_denoiser(name, in_memory, opts)
        if name == "empirical":  # N rows in one chunk: no padding, so the map itself is the device array
            assert den_map.chunks.unsafe_buffer_pointer() == mapped.images.ctypes.data
            assert den_mem.chunks.unsafe_buffer_pointer() != in_memory.images.ctypes.data
        for sigma in (0.3, 2.0):
            a = den_map(jnp.asarray(x), jnp.float32(sigma), key=jax.random.split(jax.random.PRNGKey(1), 3))
            b = den_mem(jnp.asarray(x), jnp.float32(sigma), key=jax.random.split(jax.random.PRNGKey(1), 3))
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_padded_rows_are_frozen_aligned_and_shared_by_the_cpu_device():
    from diffcli.denoisers.rows import device_rows, pad_to
    from diffcli.index.coarse import piece_blocks

    rows = np.arange(5 * 3, dtype=np.uint8).reshape(5, 3)
    padded = pad_to(rows, 8)
    assert not padded.flags.writeable and padded.ctypes.data % 64 == 0
    np.testing.assert_array_equal(padded, np.concatenate([rows, np.zeros((3, 3), np.uint8)]))
    assert device_rows(padded).unsafe_buffer_pointer() == padded.ctypes.data
    writable = rows.copy()  # an array someone may still write is copied, never shared
    assert device_rows(writable).unsafe_buffer_pointer() != writable.ctypes.data

    proxy = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    ids = np.array([[0, 3, -1], [6, 1, 2], [5, 4, -1]])
    blocks, half = piece_blocks(proxy, ids, batch=2)  # batches that do not divide the pieces
    for p, members in enumerate(ids):
        for j, i in enumerate(members):
            want = proxy[i] if i >= 0 else np.zeros(4, np.float32)
            np.testing.assert_array_equal(blocks[p, :, j], want)
            if i < 0:
                assert half[p, j] == np.inf
            else:
                np.testing.assert_allclose(half[p, j], 0.5 * np.dot(want.astype(np.float64), want), rtol=4 * EPS)
    assert device_rows(blocks).unsafe_buffer_pointer() == blocks.ctypes.data
