"""ELS and LS (Kamb & Ganguli) against a float64 NumPy transcription of the official code (helpers/els_reference.py):
single calls at several sigmas and patch sizes in one batch, a short sample from the same noise, and the patch-size
schedules (calibrations by name, user lists, scaling to other image sides, the machine's limits)."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.data import load_dataset
from diffcli.denoisers.els import build_els, build_ls, patch_plan
from diffcli.denoisers.els_scales import (
    CALIBRATIONS,
    default_scales,
    largest,
    nearest_odd,
    official_sigma,
    official_t,
    scaled,
    sizes_at,
)
from diffcli.denoisers.options import ElsOptions
from diffcli.errors import UsageError
from diffcli.index.store import Index
from diffcli.solvers.euler import sample_euler
from tests.helpers import els_reference as ref

EPS = float(np.finfo(np.float32).eps)
call = eqx.filter_jit(lambda d, x, s: d(x, s))
sample = eqx.filter_jit(lambda d, x, s: sample_euler(d, x, s).x0)


def small_index(spec: str, n: int) -> Index:
    imgs = load_dataset(spec).train[:n]
    data = imgs.reshape(n, -1).astype(np.float32) / 127.5 - 1
    z = np.zeros(data.shape[1], np.float32)
    return Index(kind="image", shape=imgs.shape[1:], images=imgs, heldout=imgs[:1], proxy=data, mean=z,
                 pca_components=np.eye(len(z), dtype=np.float32)[:2], pca_variances=np.ones(2, np.float32),
                 residual_variance=0.0, attrs={"dataset": spec})


def tolerance(x, sigma, train, k):
    """float32 rounding of the logits (q.t - |t|^2/2) / sigma^2, which moves the weighted mean of values in [-1, 1]
    by at most about the logits' own error, plus a few roundings of the weighted sums."""
    d = k // 2
    wrapped = np.pad(np.square(np.asarray(x, np.float64)), ((0, 0), (d, d), (d, d)), mode="wrap")
    q = np.sqrt(np.max(ref.sliding_window_view(wrapped, (k, k), axis=(1, 2)).sum((0, -1, -2))))
    t = np.sqrt(k * k * x.shape[0] * np.max(np.square(train)))
    return EPS * (16 * (q * t + t * t / 2) / sigma**2 + 64)


CASES = {  # dataset, rows, patch sizes (entry i at t = i/3)
    "digits": ("digits", 40, (3, 5, 7)),
    "shapes": ("shapes:res=16,n=40", 16, (3, 7, 13)),
}
T_QUERIES = (0.02, 0.05, 0.35, 0.66, 0.7, 0.95)  # entries 0, 0, 1, 2, 2, 2: every branch in one batch


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    spec, n, sizes = CASES[request.param]
    idx = small_index(spec, n)
    train = idx.train_data().reshape(-1, *idx.shape).astype(np.float64)
    sig = official_sigma(np.array(T_QUERIES))
    rng = np.random.default_rng(1)
    picks = rng.integers(0, n, len(sig))
    x = (train[picks] + sig[:, None, None, None] * rng.standard_normal((len(sig), *idx.shape))).astype(np.float32)
    return idx, train, sizes, sig, x


@pytest.mark.parametrize("equivariant", [True, False], ids=["els", "ls"])
def test_one_call_matches_the_official_rules(case, equivariant):
    idx, train, sizes, sig, x = case
    build = build_els if equivariant else build_ls
    den = build(idx, ElsOptions(els_patch_sizes=sizes, chunk_size=7))  # chunks of 7 rows: a short last chunk
    got = np.asarray(call(den, jnp.asarray(x), jnp.asarray(sig, jnp.float32)))
    ks = [k for k, _ in sizes_at(sig, scales=None, patch_sizes=sizes, shape=idx.shape, equivariant=equivariant,
                                 boundary="official")]
    assert sorted(set(ks)) == sorted(set(min(k, largest(idx.shape[1], equivariant, "official")) for k in sizes))
    for b in range(len(sig)):
        want = ref.denoise(x[b], sig[b], train, ks[b], equivariant=equivariant)
        np.testing.assert_allclose(got[b], want, rtol=0, atol=tolerance(x[b], sig[b], train, ks[b]))


@pytest.mark.parametrize("equivariant", [True, False], ids=["els", "ls"])
def test_circular_variant_matches_wrapped_reference(equivariant):
    idx = small_index("digits", 24)
    train = idx.train_data().reshape(-1, *idx.shape).astype(np.float64)
    sig = np.array([0.3, 1.5])
    x = (train[:2] + sig[:, None, None, None] * np.random.default_rng(2).standard_normal(train[:2].shape))
    x = x.astype(np.float32)
    build = build_els if equivariant else build_ls
    den = build(idx, ElsOptions(els_patch_sizes=(5,), els_boundary="circular"))
    got = np.asarray(call(den, jnp.asarray(x), jnp.asarray(sig, jnp.float32)))
    for b in range(2):
        want = ref.denoise(x[b], sig[b], train, 5, equivariant=equivariant, circular=True)
        np.testing.assert_allclose(got[b], want, rtol=0, atol=tolerance(x[b], sig[b], train, 5))
    # the two patch sets differ: the official one leaves out the training patches that wrap
    for b in range(2):
        official = ref.denoise(x[b], sig[b], train, 5, equivariant=equivariant)
        assert np.abs(official - got[b]).max() > 10 * tolerance(x[b], sig[b], train, 5)


@pytest.mark.parametrize("spec,n,equivariant", [("digits", 40, True), ("shapes:res=16,n=40", 12, False)],
                         ids=["els-digits", "ls-shapes"])
def test_short_sample_matches_the_official_rules(spec, n, equivariant):
    """A 4-step Euler (DDIM) sample with the default calibration, from the same noise, a batch of 3."""
    idx = small_index(spec, n)
    train = idx.train_data().reshape(-1, *idx.shape).astype(np.float64)
    sigmas = np.append(official_sigma(np.array([0.8, 0.6, 0.4, 0.2])), 0.0)
    build = build_els if equivariant else build_ls
    den = build(idx, ElsOptions(sigmas=sigmas))
    ks = [k for k, _ in sizes_at(sigmas[:-1], scales=None, patch_sizes=None, shape=idx.shape,
                                 equivariant=equivariant, boundary="official")]
    assert len(set(ks)) > 1  # the size changes along the way
    x_t = (sigmas[0] * np.random.default_rng(3).standard_normal((3, *idx.shape))).astype(np.float32)
    got = np.asarray(sample(den, jnp.asarray(x_t), jnp.asarray(sigmas, jnp.float32)))
    want = ref.sample_euler(x_t, sigmas, train, ks, equivariant=equivariant)
    # each step's error (the last step's, at the smallest sigma, dominates) carried through contracting steps
    tol = sum(max(tolerance(x, s, train, k) for x in x_t) for s, k in zip(sigmas[:-1], ks, strict=True))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


# --- patch-size schedules ----------------------------------------------------------------------------------------

def test_calibrations_are_read_as_measured_and_user_lists_as_the_official_sampler_reads_them():
    cal = CALIBRATIONS["cifar10-unet-zeros"]
    t = np.arange(1, 20) / 20
    shape = (3, 32, 32)
    named = [k for k, _ in sizes_at(official_sigma(t), scales="cifar10-unet-zeros", patch_sizes=None, shape=shape,
                                    equivariant=True, boundary="official")]
    assert named == list(cal[:19])  # measured at t = i/20, stored at i - 1
    listed = [k for k, _ in sizes_at(official_sigma(t), scales=None, patch_sizes=cal, shape=shape,
                                     equivariant=True, boundary="official")]
    assert listed == list(cal[1:])  # the official sampler: scales[i] at t = i/20, one step noisier
    np.testing.assert_allclose(official_t(official_sigma(t)), t, rtol=1e-12)
    assert official_sigma(1.0) == pytest.approx(np.tan(np.pi / 2 / 1.008))  # their cosine ends near sigma 80


def test_sizes_are_scaled_from_32_px_to_odd_sizes_and_capped_at_the_image():
    assert [nearest_odd(v) for v in (0.2, 1.0, 1.99, 2.0, 2.5, 3.0, 4.0, 6.75)] == [1, 1, 1, 3, 3, 3, 5, 7]
    assert [scaled(k, 8) for k in (3, 9, 17, 25, 27)] == [1, 3, 5, 7, 7]  # k * 8 / 32 to the nearest odd
    assert [scaled(k, 16) for k in (3, 5, 7, 13, 25, 27)] == [1, 3, 3, 7, 13, 13]
    assert [scaled(k, 32) for k in (3, 25)] == [3, 25] and scaled(13, 64) == 27
    assert (largest(8, True, "official"), largest(8, True, "circular")) == (7, 7)
    assert (largest(7, True, "official"), largest(7, True, "circular"), largest(7, False, "official")) == (7, 5, 13)
    sig = official_sigma(np.arange(1, 21) / 20)
    for side in (8, 16, 28, 32):
        for name in CALIBRATIONS:
            for eq in (True, False):
                for boundary in ("official", "circular"):
                    got = sizes_at(sig, scales=name, patch_sizes=None, shape=(1, side, side), equivariant=eq,
                                   boundary=boundary)
                    assert all(k % 2 == 1 and 1 <= k <= largest(side, eq, boundary) for k, _ in got)
                    assert got == [(min(scaled(k, side), largest(side, eq, boundary)),) * 2
                                   for k in CALIBRATIONS[name]]
    # a user list is taken as given, capped
    assert sizes_at([1e-3, 50.0], scales=None, patch_sizes=(3, 31), shape=(1, 8, 8), equivariant=True,
                    boundary="official") == [(3, 3), (7, 7)]


def test_default_calibration_per_channels():
    assert default_scales(1, "official") == default_scales(1, "circular") == "mnist-resnet-circular"
    assert default_scales(3, "official") == "cifar10-resnet-circular"
    got = sizes_at(official_sigma(np.arange(1, 21) / 20), scales=None, patch_sizes=None, shape=(3, 32, 32),
                   equivariant=True, boundary="official")
    assert [k for k, _ in got] == list(CALIBRATIONS["cifar10-resnet-circular"])


def test_plan_compiles_only_the_sizes_of_the_schedule_and_is_exact_without_one():
    sig = np.append(official_sigma(np.array([0.9, 0.5, 0.1])), 0.0)
    log_edges, sizes, branch = patch_plan(sig, (1, 32, 32), scales="mnist-unet-zeros")
    got = [sizes[b] for b in branch]  # bands ascending in sigma
    assert got == [(k, k) for k in (CALIBRATIONS["mnist-unet-zeros"][i] for i in (1, 9, 17))]
    log_edges, sizes, branch = patch_plan(None, (1, 32, 32), scales="mnist-unet-zeros")
    assert len(branch) == 20 and len(log_edges) == 19 and np.all(np.diff(log_edges) > 0)
    idx = small_index("digits", 8)
    den = build_ls(idx, ElsOptions(els_patch_sizes=(1, 3, 5, 7)))
    s = official_sigma(np.linspace(0.01, 0.99, 25))
    want = sizes_at(s, scales=None, patch_sizes=(1, 3, 5, 7), shape=idx.shape, equivariant=False,
                    boundary="official")
    assert [den.sizes[b] for b in np.asarray(den.branches(jnp.asarray(s, jnp.float32)))] == want


@pytest.mark.parametrize("settings, words", [
    ({"els_patch_sizes": "3,4"}, "odd sizes"),
    ({"els_patch_sizes": "0"}, "at least 1"),
    ({"els_patch_sizes": (3,), "els_scales": "mnist-unet-zeros"}, "not both"),
    ({"els_scales": "cifar100"}, "is not one of"),
    ({"els_boundary": "zeros"}, "is not one of"),
])
def test_options_refuse_in_one_sentence(settings, words):
    with pytest.raises(UsageError, match=words):
        ElsOptions.from_settings(settings)
