"""Networks from outside: each parameterisation wrapper against the exact mixture denoiser, the sigma <-> timestep
tables against noise.py, model factories (files, modules, declarations, faults) and `diffcli sample --denoiser jax`.

The oracle networks return the exact x0, eps, v or EDM F of a Gaussian mixture in their own parameterisation and
timestep convention, written from the definitions (not from the wrapper's code), so a wrapped oracle must equal the
`gmm` denoiser to float tolerance.
"""

import json
import sys
import textwrap

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from diffcli import noise
from diffcli.denoisers.gmm import GMMDenoiser
from diffcli.denoisers.options import DENOISER_OPTIONS, ModelOptions
from diffcli.errors import DiffcliError, UsageError
from diffcli.models import wrappers
from diffcli.models.external import call_factory, split_returned
from diffcli.models.wrappers import ModelDenoiser, Parameterisation, resolve_parameterisation
from tests.helpers.gaussian_oracle import x64
from tests.helpers.tolerance import assert_close

runner = CliRunner()
DIM = 5


def mixture(dim=DIM, k=3, seed=0):
    rng = np.random.default_rng(seed)
    means = 2.0 * rng.standard_normal((k, dim))
    stds = rng.uniform(0.2, 0.8, k)
    weights = rng.uniform(0.5, 1.5, k)
    return means, stds, weights / weights.sum()


# --- the networks' own timestep conventions, written from their definitions ----------------------------------------

def linear_table(steps=1000, start=1e-4, end=0.02):
    """sigma_t of Ho et al.'s DDPM: betas linear in t, abar the cumulative product."""
    abar = np.cumprod(1.0 - np.linspace(start, end, steps))
    return np.sqrt((1.0 - abar) / abar)


def cosine_table(steps=1000):
    """sigma_t of Nichol & Dhariwal's discrete cosine schedule as diffusers builds it (squaredcos_cap_v2)."""
    f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    i = np.arange(steps)
    betas = np.minimum(1.0 - f((i + 1) / steps) / f(i / steps), 0.999)
    abar = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - abar) / abar)


def oracle_network(gmm, output, noise_kind, *, table=None, sigma_data=0.5):
    """f(x_in, cond) returning the exact `output` of the mixture for a network conditioned as `noise_kind`."""
    log_table = None if table is None else jnp.log(jnp.asarray(table))

    def f(x_in, cond):
        if output == "edm":
            sigma = jnp.exp(4.0 * cond)  # c_noise = ln(sigma) / 4
        elif noise_kind == "ve":
            sigma = cond
        else:  # a VP timestep, log sigma linear between the integer timesteps
            sigma = jnp.exp(jnp.interp(cond, jnp.arange(log_table.shape[0], dtype=cond.dtype), log_table))
        s = sigma[:, None]
        if output == "edm":
            x = x_in * jnp.sqrt(s**2 + sigma_data**2)
        elif noise_kind == "ve":
            x = x_in
        else:
            x = x_in * jnp.sqrt(1.0 + s**2)  # x_vp = sqrt(abar) x
        x0 = gmm(x, sigma)
        eps = (x - x0) / s
        if output == "x0":
            return x0
        if output == "eps":
            return eps
        if output == "v":  # v = sqrt(abar) eps - sqrt(1 - abar) x0
            abar = 1.0 / (1.0 + s**2)
            return jnp.sqrt(abar) * eps - jnp.sqrt(1.0 - abar) * x0
        c_skip = sigma_data**2 / (s**2 + sigma_data**2)
        c_out = s * sigma_data / jnp.sqrt(s**2 + sigma_data**2)
        return (x0 - c_skip * x) / c_out

    return f


def noisy_points(means, sigma, n=8, seed=1):
    rng = np.random.default_rng(seed)
    sig = np.broadcast_to(np.asarray(sigma, np.float64), (n,))
    x = means[rng.integers(0, len(means), n)] + np.sqrt(0.3 + sig[:, None] ** 2) * rng.standard_normal((n, DIM))
    return x, sig


def between(table):
    """Geometric midpoints of neighbouring table sigmas (the fractional timesteps t + 1/2)."""
    return np.sqrt(table[:-1] * table[1:])


CASES = [(out, kind) for kind in ("ve", "vp-linear", "vp-cosine") for out in ("x0", "eps", "v")] + [("edm", "ve")]


@pytest.mark.parametrize("output, kind", CASES)
def test_wrapped_oracle_equals_the_exact_denoiser(output, kind):
    means, stds, weights = mixture()
    table = {"vp-linear": linear_table(), "vp-cosine": cosine_table()}.get(kind)
    if table is None:
        sigmas = np.geomspace(0.002, 80.0, 24)
    else:
        picks = np.array([0, 1, 2, 10, 100, 500, 900, 990])
        inside = table[:-1] < 80.0  # sigmas a sampler uses; cosine's last timesteps reach sigma ~ 1e3 - 2e4
        sigmas = np.concatenate([table[picks], between(table)[picks][inside[picks]],
                                 np.geomspace(table[0], 80.0, 7)])
    with x64():
        gmm = GMMDenoiser.from_arrays(means, stds, weights, dtype=np.float64)
        net = oracle_network(gmm, output, kind, table=table)
        den = ModelDenoiser.wrap(net, Parameterisation(model_output=output, model_noise=kind))
        call = eqx.filter_jit(lambda d, x, s: d(x, s))
        for sigma in sigmas:
            x, sig = noisy_points(means, sigma)
            got = np.asarray(call(den, jnp.asarray(x), jnp.asarray(sig)))
            want = np.asarray(gmm(jnp.asarray(x), jnp.asarray(sig)))
            # eps and v recover x0 from x of size ~sigma: rounding errors scale with |x|, not with |x0|
            assert_close(got, want, dtype=np.float64, ulps=64, cond=8.0, scale=np.abs(x).max() + 1.0,
                         err_msg=f"{output}/{kind} at sigma={sigma:.4g}")


def test_vp_tables_and_timesteps_match_noise_py():
    lin = Parameterisation(model_noise="vp-linear")
    np.testing.assert_array_equal(wrappers.vp_sigmas(lin), noise.ddpm_sigmas())
    np.testing.assert_allclose(wrappers.vp_sigmas(Parameterisation(model_noise="vp-cosine")), cosine_table(),
                               rtol=1e-12)
    np.testing.assert_allclose(wrappers.vp_sigmas(Parameterisation(model_noise="vp-linear", model_timesteps=400,
                                                                   model_beta_start=2e-4, model_beta_end=0.03)),
                               linear_table(400, 2e-4, 0.03), rtol=1e-12)
    # the discrete cosine table is the continuous one of noise.py at t = (i + 1) / T (before the beta clip)
    cos = wrappers.vp_sigmas(Parameterisation(model_noise="vp-cosine"))
    i = np.arange(0, 990, 7)
    np.testing.assert_allclose(noise.cosine_sigma_to_t(cos[i]) * 1000, i + 1, atol=1e-6)
    sig = np.concatenate([np.geomspace(1e-3, 500.0, 301), noise.ddpm_sigmas()[::37]])
    with x64():
        log_table = jnp.log(jnp.asarray(noise.ddpm_sigmas()))
        frac = np.asarray(wrappers.sigma_to_timestep(jnp.asarray(sig), log_table))
        near = np.asarray(wrappers.sigma_to_timestep(jnp.asarray(sig), log_table, nearest=True))
        back = np.asarray(wrappers.timestep_to_sigma(jnp.asarray(frac), log_table))
    np.testing.assert_allclose(frac, noise.ddpm_sigma_to_t(sig), rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(near, noise.ddpm_sigma_to_t(sig, nearest=True))
    inside = (sig >= noise.ddpm_sigmas()[0]) & (sig <= noise.ddpm_sigmas()[-1])
    np.testing.assert_allclose(back[inside], sig[inside], rtol=1e-12)
    np.testing.assert_allclose(back[inside], noise.ddpm_t_to_sigma(frac[inside]), rtol=1e-12)


def test_output_conversions_invert_noise_py():
    rng = np.random.default_rng(0)
    x, d = rng.standard_normal((2, 6, DIM)) * 3
    sigma = rng.uniform(0.01, 50, (6, 1))
    with x64():
        for kind, out in (("eps", noise.eps_from_denoiser(x, d, sigma)), ("v", noise.v_from_denoiser(x, d, sigma))):
            got = np.asarray(wrappers.to_denoised(kind, jnp.asarray(x), jnp.asarray(out), jnp.asarray(sigma)))
            assert_close(got, d, dtype=np.float64, ulps=64, cond=50.0, err_msg=kind)


def test_nearest_timesteps_are_exact_at_the_table_and_round_between():
    means, stds, weights = mixture()
    table = linear_table()
    seen = []
    with x64():
        gmm = GMMDenoiser.from_arrays(means, stds, weights, dtype=np.float64)
        oracle = oracle_network(gmm, "eps", "vp-linear", table=table)

        def recording(x_in, t):
            jax.debug.callback(lambda tt: seen.append(np.asarray(tt)), t)
            return oracle(x_in, t)

        den = ModelDenoiser.wrap(recording, Parameterisation(model_output="eps", model_timestep_mode="nearest"))
        picks = np.array([0, 3, 40, 400, 950])
        for sigma in table[picks]:
            x, sig = noisy_points(means, sigma)
            assert_close(den(jnp.asarray(x), jnp.asarray(sig)), gmm(jnp.asarray(x), jnp.asarray(sig)),
                         dtype=np.float64, ulps=64, cond=8.0, scale=np.abs(x).max() + 1.0)
        np.testing.assert_array_equal(np.concatenate(seen)[::8], picks)
        seen.clear()
        mids = table[picks] * (table[picks + 1] / table[picks]) ** 0.3  # nearer to t than to t + 1 in log sigma
        x, _ = noisy_points(means, 1.0, n=len(mids))
        got = np.asarray(den(jnp.asarray(x), jnp.asarray(mids)))
        t = np.concatenate(seen)
        np.testing.assert_array_equal(t, picks)
        x_vp = x / np.sqrt(1 + mids[:, None] ** 2)  # the input is scaled with the true sigma, as in k-diffusion
        want = x - mids[:, None] * np.asarray(oracle(jnp.asarray(x_vp), jnp.asarray(t, jnp.float64)))
        assert_close(got, want, dtype=np.float64, ulps=64, scale=np.abs(x).max() + 1.0)


def test_sigma_zero_returns_x_and_float32_stays_finite():
    f = lambda x, c: jnp.log(jnp.abs(c))[:, None] + x  # nan/inf at c = 0 or ln 0
    x = jnp.ones((3, DIM), jnp.float32)
    for output, kind in CASES:
        den = ModelDenoiser.wrap(f, Parameterisation(model_output=output, model_noise=kind))
        out = np.asarray(jax.jit(lambda d, x, s: d(x, s))(den, x, jnp.array([0.0, 0.5, 80.0], jnp.float32)))
        assert out.dtype == np.float32 and np.all(np.isfinite(out)), (output, kind)
        np.testing.assert_array_equal(out[0], np.ones(DIM))


def test_parameterisation_refuses_nonsense_in_one_sentence():
    with pytest.raises(UsageError, match="--model-output edm .* needs --model-noise ve"):
        Parameterisation(model_output="edm", model_noise="vp-linear")
    with pytest.raises(UsageError, match="--model-noise 'vp-sqrt' is not one of"):
        Parameterisation(model_noise="vp-sqrt")
    with pytest.raises(UsageError, match="--model-beta-start and --model-beta-end"):
        Parameterisation(model_beta_start=0.1, model_beta_end=0.01)
    with pytest.raises(UsageError, match="--model-noise"):
        ModelOptions(model_noise="vp-sqrt")


def test_option_choices_match_the_wrappers():
    fields = {f.name: f.metadata for f in ModelOptions.__dataclass_fields__.values()}
    assert fields["model_output"]["choices"] == wrappers.MODEL_OUTPUTS
    assert fields["model_noise"]["choices"] == wrappers.MODEL_NOISES
    assert fields["model_timestep_mode"]["choices"] == wrappers.TIMESTEP_MODES
    assert set(wrappers.PARAMETERISATION_KEYS) <= set(fields)
    assert DENOISER_OPTIONS["neural"].__dataclass_fields__["model"].metadata == fields["model"]


def test_flags_fill_the_declaration_and_a_contradiction_is_one_sentence():
    p = resolve_parameterisation({"model_timesteps": 500, "model_output": None}, {"model_output": "v"})
    assert (p.model_output, p.model_noise, p.model_timesteps) == ("v", "vp-linear", 500)
    p = resolve_parameterisation({"model_output": "v"}, {"model_output": "v", "model_beta_end": 0.02})
    assert p.model_output == "v"
    with pytest.raises(UsageError, match=r"^--model-output eps contradicts the model 'm.py:f', which declares v; "):
        resolve_parameterisation({"model_output": "eps"}, {"model_output": "v"}, source="the model 'm.py:f'")


# --- the solvers jit the wrapped network ----------------------------------------------------------------------------

SOLVER_NAMES = ("euler", "heun", "ddpm", "dpmpp-2m", "dpmpp-3m", "unipc", "picard", "collocation")
SOLVER_SIGMAS = np.concatenate([np.geomspace(80.0, 0.02, 6), [0.0]])  # inside the DDPM table's sigmas


def run_solvers(den, ref, *, sigmas, shape=(DIM,), n=4):
    """{solver: (wrapped samples, reference samples)} from generate(), the batched, jitted sampling loop."""
    from diffcli.sample.batches import generate
    from diffcli.solvers import get_solver

    out = {}
    for name in SOLVER_NAMES:
        kw = dict(solver=get_solver(name), sigmas=sigmas, shape=shape, ids=np.arange(n), seed=3, batch_size=n)
        out[name] = (generate(denoiser=den, **kw).samples, generate(denoiser=ref, **kw).samples)
    return out


def test_every_solver_runs_the_wrapped_network_as_the_exact_denoiser():
    means, stds, weights = mixture()
    gmm = GMMDenoiser.from_arrays(means, stds, weights)
    table = linear_table()
    den = ModelDenoiser.wrap(oracle_network(gmm, "eps", "vp-linear", table=table.astype(np.float32)),
                             Parameterisation(model_output="eps", model_noise="vp-linear"))
    for name, (got, want) in run_solvers(den, gmm, sigmas=SOLVER_SIGMAS).items():
        # two compiled programs in float32; sigma -> t -> sigma round trips cost a few roundings of log sigma
        assert_close(got, want, dtype=np.float32, ulps=64, cond=16.0, err_msg=name)


# --- model factories ------------------------------------------------------------------------------------------------

MIXTURE_NET = """
import jax.numpy as jnp
import numpy as np
from diffcli.denoisers.gmm import GMMDenoiser

MEANS, STDS, WEIGHTS = {means}, {stds}, {weights}


def exact_eps(shape):
    gmm = GMMDenoiser.from_arrays(np.array(MEANS), np.array(STDS), np.array(WEIGHTS))
    assert shape == (np.array(MEANS).shape[1],)

    def f(x, sigma):
        return (x - gmm(x, sigma)) / sigma[:, None]

    return {{"apply": f, "output": "eps", "model_noise": "ve"}}
"""


def write_mixture_net(path, means, stds, weights):
    path.write_text(MIXTURE_NET.format(means=json.dumps(np.asarray(means).tolist()),
                                       stds=json.dumps(np.asarray(stds).tolist()),
                                       weights=json.dumps(np.asarray(weights).tolist())))
    return path


def test_factory_forms_and_modules(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(textwrap.dedent("""
        import equinox as eqx
        import jax.numpy as jnp

        class Scale(eqx.Module):
            w: jnp.ndarray
            def __call__(self, x, t):
                return self.w * x

        def plain():
            return lambda x, t: 0 * x

        def sized(shape):
            return (Scale(jnp.ones(shape)), "x0", "ve")

        def with_dict():
            return (lambda x, t: x, {"noise": "vp-cosine", "timesteps": 200})
    """))
    f = str(tmp_path / "mynets.py")
    net, declared = split_returned(call_factory(f + ":plain", (3,), denoiser="jax"), spec="s")
    assert declared == {} and np.asarray(net(jnp.ones((2, 3)), jnp.ones(2))).sum() == 0
    net, declared = split_returned(call_factory(f + ":sized", (3,), denoiser="jax"), spec="s")
    assert declared == {"model_output": "x0", "model_noise": "ve"} and net.w.shape == (3,)
    _, declared = split_returned(call_factory(f + ":with_dict", (3,), denoiser="jax"), spec="s")
    assert declared == {"model_noise": "vp-cosine", "model_timesteps": 200}
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mynets", raising=False)
    net, declared = split_returned(call_factory("mynets:sized", (4,), denoiser="jax"), spec="s")
    assert net.w.shape == (4,)
    # an equinox network stays a pytree: its arrays are jit inputs, not constants
    den = ModelDenoiser.wrap(net, Parameterisation(model_output="x0", model_noise="ve"))
    assert any(leaf.shape == (4,) for leaf in jax.tree_util.tree_leaves(den))


BAD_FILES = {
    "missing.py:f": (DiffcliError, "model file '.*missing.py' does not exist."),
    "nets.py:nope": (DiffcliError, "'.*nets.py' has no factory 'nope'; it defines: .*good"),
    "nets.py:boom": (DiffcliError, "the model factory '.*nets.py:boom' raised RuntimeError: no weights here."),
    "broken.py:f": (DiffcliError, "model file '.*broken.py' failed to load: NameError: "),
    "nets.py:wrong_shape": (DiffcliError, r"returned an output of shape \(2, 3\) for a batch of shape \(2, 5\)"),
    "nets.py:numpy_inside": (DiffcliError, r"failed on a batch of shape \(2, 5\): TracerArrayConversionError"),
    "nets.py:bad_key": (DiffcliError, "declares an unknown key 'colour'"),
    "nets.py:not_callable": (DiffcliError, "returned int, not a callable network"),
    "nets.py": (UsageError, "is not FILE.py:FACTORY or package.module:FACTORY"),
    "no_such_pkg_xyz.mod:f": (DiffcliError, "model module 'no_such_pkg_xyz.mod' cannot be found"),
}


@pytest.mark.parametrize("spec", list(BAD_FILES))
def test_bad_model_files_are_one_sentence(tmp_path, spec):
    from diffcli.denoisers.jax_model import build

    (tmp_path / "nets.py").write_text(textwrap.dedent("""
        import numpy as np
        def good(): return lambda x, t: x
        def boom(): raise RuntimeError("no weights here")
        def wrong_shape(): return lambda x, t: x[:, :3]
        def numpy_inside(): return lambda x, t: np.asarray(x)
        def bad_key(): return {"apply": lambda x, t: x, "colour": "red"}
        def not_callable(): return 3
    """))
    (tmp_path / "broken.py").write_text("undefined_name + 1\n")
    where = spec if spec.startswith("no_such") else str(tmp_path / spec)
    index = type("I", (), {"shape": (DIM,)})()
    kind, pattern = BAD_FILES[spec]
    with pytest.raises(kind, match=pattern) as info:
        build(index, ModelOptions(model=where))
    assert "\n" not in str(info.value) and str(info.value).endswith(".")


def test_build_fills_from_the_declaration_and_refuses_a_contradiction(tmp_path):
    from diffcli.denoisers.jax_model import build

    means, stds, weights = mixture()
    path = write_mixture_net(tmp_path / "net.py", means, stds, weights)
    index = type("I", (), {"shape": (DIM,)})()
    den = build(index, ModelOptions(model=f"{path}:exact_eps"))
    assert (den.param.model_output, den.param.model_noise) == ("eps", "ve")
    with pytest.raises(UsageError, match="--model-noise vp-linear contradicts the model"):
        build(index, ModelOptions(model=f"{path}:exact_eps", model_noise="vp-linear"))
    with pytest.raises(UsageError, match="needs --model FILE.py:FACTORY"):
        build(index, ModelOptions())


# --- diffcli sample --denoiser jax ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory):
    from diffcli.cli import app
    from diffcli.data import load_dataset
    from diffcli.index import open_index
    from diffcli.index.build import build_index

    d = tmp_path_factory.mktemp("jaxmodel")
    idx = build_index(load_dataset(f"gmm:dim={DIM},components=3,n=200"), d / "g.h5", coarse=False)
    g = open_index(idx).gmm
    model = write_mixture_net(d / "net.py", g["means"], g["stds"], g["weights"])
    common = ["sample", "--index", str(idx), "--solver", "heun", "--steps", "6", "-n", "6", "--batch-size", "4",
              "--json"]

    def invoke(*args):
        return runner.invoke(app, [*common, *args])

    return d, f"{model}:exact_eps", invoke


def test_sample_with_a_jax_model_equals_the_exact_denoiser_and_shards(gmm_run):
    d, spec, invoke = gmm_run
    res = invoke("--denoiser", "jax", "--model", spec, "--out", str(d / "jax"))
    assert res.exit_code == 0, res.output
    assert invoke("--denoiser", "gmm", "--out", str(d / "gmm")).exit_code == 0
    res = invoke("--denoiser", "jax", "--model", spec, "--shard", "1/3", "--out", str(d / "shard"))
    assert res.exit_code == 0, res.output
    with h5py.File(d / "jax" / "samples.h5") as a, h5py.File(d / "gmm" / "samples.h5") as b, \
            h5py.File(d / "shard" / "samples.h5") as s:
        assert a.attrs["denoiser"] == "jax" and a.attrs["model"] == spec
        # the parameterisation the model declared is recorded, not only the flags given (none here)
        assert (a.attrs["model_output"], a.attrs["model_noise"]) == ("eps", "ve")
        assert_close(a["samples"][...], b["samples"][...], dtype=np.float32, ulps=64, cond=16.0)
        assert s["ids"][...].tolist() == [1, 4]
        # the shard runs the one-shot run's program on the same inputs
        np.testing.assert_array_equal(s["samples"][...], a["samples"][...][[1, 4]])


def test_sample_refuses_model_flags_elsewhere_and_bad_models_in_one_sentence(gmm_run, tmp_path):
    d, spec, invoke = gmm_run
    res = invoke("--denoiser", "gmm", "--model-output", "eps", "--out", str(tmp_path / "a"))
    assert res.exit_code == 2 and "--model-output applies to --denoiser jax, torch, diffusers only" in res.stderr
    res = invoke("--denoiser", "jax", "--model", str(tmp_path / "none.py:f"), "--out", str(tmp_path / "b"))
    assert res.exit_code == 1 and "does not exist." in res.stderr and "Traceback" not in res.output
    res = invoke("--denoiser", "jax", "--model", spec, "--model-output", "v", "--out", str(tmp_path / "c"))
    assert res.exit_code == 2 and "contradicts" in res.stderr
