"""Shared set-up: a persistent JAX compilation cache, a private DIFFCLI_HOME per test session, small indexes built
once, the multi-device results (one interpreter per fake device count) and a trace counter."""

import hashlib
import os
import platform
import shutil
import tempfile

import pytest

MULTI_DEVICE_COUNTS = (1, 2, 8)


def _cpu_fingerprint() -> str:
    """XLA's CPU code depends on the CPU (Intel or AMD, AVX2 or AVX-512) and JAX's cache key does not say which, so a
    cache directory restored onto another machine must not be reused: the directory name carries the CPU."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            text += "".join(sorted({ln for ln in f if ln.startswith(("model name", "flags", "Features"))}))
    except OSError:
        text += platform.processor()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _compilation_cache_dir() -> str | None:
    """DIFFCLI_TEST_JAX_CACHE=0 turns the cache off; a path puts it there; by default it lives in the user's cache
    folder, so every clone on this machine (a fresh CI checkout too) reuses what an earlier run compiled. JAX's key
    covers the program, the flags and the jax version; the folder name adds the CPU."""
    chosen = os.environ.get("DIFFCLI_TEST_JAX_CACHE")
    if chosen == "0":
        return None
    if chosen:
        return chosen
    base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "diffcli-tests-jax")
    return os.path.join(base, f"{platform.python_version()}-{_cpu_fingerprint()}")


def _fast_compiles() -> None:
    """Most of the suite's time is XLA compiling small programs, and most of that is LLVM optimising them: the tests
    compile with LLVM at -O0 (about 40% less CPU time; XLA's own HLO passes still run, results stay IEEE and are
    compared with eps-derived tolerances). DIFFCLI_TEST_XLA_OPT=default keeps XLA's default, as users run it."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("DIFFCLI_TEST_XLA_OPT") != "default" and "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


def _reproducible_examples() -> None:
    """Property tests draw the same examples on every run and machine, so a suite that passed once passes again (set
    DIFFCLI_TEST_HYPOTHESIS=random to explore new examples)."""
    from hypothesis import settings

    if os.environ.get("DIFFCLI_TEST_HYPOTHESIS") != "random":
        settings.register_profile("diffcli", derandomize=True, database=None)
        settings.load_profile("diffcli")


def pytest_configure(config):
    """Before any test module imports jax: every compiled program goes to a persistent cache, so a program compiled
    twice in one run (in-process and in a subprocess, or in two subprocesses) and every program of a second run is
    read back instead of compiled. Subprocesses (CLI runs, multi-device and multi-host workers) inherit it through
    the environment variables jax reads at import."""
    _fast_compiles()
    _reproducible_examples()
    # subprocess workers import diffcli and the test helpers from this checkout, whatever their working directory
    paths = [str(config.rootpath), os.path.join(str(config.rootpath), "tests"), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    path = _compilation_cache_dir()
    if path is None:
        return
    os.makedirs(path, exist_ok=True)
    settings = {"JAX_COMPILATION_CACHE_DIR": path, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    os.environ.update(settings)
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session", autouse=True)
def diffcli_home(tmp_path_factory):
    """Never touch the user's cache: every index the tests build goes to a temporary home."""
    home = tmp_path_factory.mktemp("diffcli-home")
    old = os.environ.get("DIFFCLI_HOME")
    os.environ["DIFFCLI_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("DIFFCLI_HOME", None)
    else:
        os.environ["DIFFCLI_HOME"] = old


@pytest.fixture
def traces():
    """A TraceCounter: `f = jax.jit(traces.wrap(fn))`, then `traces.count` is how often fn was traced."""
    from tests.helpers.tracing import TraceCounter

    return TraceCounter()


@pytest.fixture(scope="session")
def digits_index_path(tmp_path_factory):
    from diffcli.data import load_dataset
    from diffcli.index.build import build_index

    path = tmp_path_factory.mktemp("idx") / "digits.h5"
    return build_index(load_dataset("digits"), path)


@pytest.fixture(scope="session")
def digits_index(digits_index_path):
    from diffcli.index import open_index

    return open_index(digits_index_path)


@pytest.fixture(scope="session")
def shapes_index_path(tmp_path_factory):
    from diffcli.data import load_dataset
    from diffcli.index.build import build_index

    path = tmp_path_factory.mktemp("idx") / "shapes16.h5"
    return build_index(load_dataset("shapes:res=16,n=600"), path)


# -- multi-device results ----------------------------------------------------------------------------------------
# One interpreter per fake device count computes every multi-device result (tests/helpers/multidevice.py). The
# interpreters start as soon as collection shows a test needs them, so they compile while other tests run.
_multidevice: dict = {}


def pytest_collection_finish(session):
    if session.config.option.collectonly or not any(
            "multidevice_runs" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    from tests.helpers import multidevice

    out = tempfile.mkdtemp(prefix="diffcli-multidevice-")
    _multidevice["dir"] = out
    _multidevice["procs"] = {d: multidevice.start(d, out) for d in MULTI_DEVICE_COUNTS if d != 1}


def pytest_sessionfinish(session):
    for proc in _multidevice.get("procs", {}).values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if "dir" in _multidevice:
        shutil.rmtree(_multidevice["dir"], ignore_errors=True)


@pytest.fixture(scope="session")
def multidevice_runs():
    """{devices: ({"sharded": arrays, "golden": arrays}, metadata)} for 1, 2 and 8 fake CPU devices.

    The one-device results are computed here, in the test process (it has one CPU device), while the 2- and 8-device
    interpreters run; each of those must finish within its timeout."""
    import jax

    from tests.helpers import multidevice

    out, procs = _multidevice.get("dir"), dict(_multidevice.get("procs", {}))
    if out is None:  # the fixture was reached without the collection hook (e.g. from another plugin's items)
        out = _multidevice["dir"] = tempfile.mkdtemp(prefix="diffcli-multidevice-")
        procs = _multidevice["procs"] = {d: multidevice.start(d, out) for d in MULTI_DEVICE_COUNTS if d != 1}
    if jax.device_count() == 1:
        multidevice.compute(1, out)
    else:  # the test process was started with fake devices: the one-device run needs its own interpreter too
        procs[1] = multidevice.start(1, out)
    results = {}
    for d in MULTI_DEVICE_COUNTS:
        if d in procs:
            _, stderr = procs[d].communicate(timeout=300)
            assert procs[d].returncode == 0, f"{d}-device worker failed:\n{stderr[-3000:]}"
        results[d] = multidevice.load(d, out)
    return results
