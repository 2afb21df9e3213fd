"""Multi-host start-up: a 2-process run on 127.0.0.1 equals one process; a missing peer ends in one sentence."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from diffcli.errors import DiffcliError, UsageError
from diffcli.parallel.distributed import first_slurm_host, resolve_config
from tests.helpers.multidevice import with_devices

WORKER = textwrap.dedent(
    """
    import json, sys
    args = json.loads(sys.argv[1])
    from diffcli.parallel.distributed import resolve_config, start
    cfg = resolve_config(args["coordinator"], args["n_proc"], args["pid"])
    start(cfg, timeout_s=args["timeout"])
    import equinox as eqx, jax, numpy as np
    from diffcli.parallel.denoiser import as_replicated
    from diffcli.index.store import index_attrs
    from diffcli.parallel.distributed import host_row_range, host_sharded_denoiser
    from diffcli.sample.batches import to_host
    from diffcli.parallel.mesh import row_mesh
    mesh = row_mesh()
    den = host_sharded_denoiser(args["index"], mesh=mesh, chunk=16)
    x = as_replicated(mesh, np.load(args["queries"]))
    call = eqx.filter_jit(lambda d, x, s: d(x, s))
    means = np.stack([to_host(call(den, x, s)) for s in args["sigmas"]])
    lo, hi = host_row_range(mesh, int(index_attrs(args["index"])["n"]), 16)
    if jax.process_index() == 0:
        np.save(args["out"], means)
    print(json.dumps({"process": jax.process_index(), "count": jax.process_count(), "rows": [lo, hi]}), flush=True)
    jax.distributed.shutdown()
    """
)

SIGMAS = [0.02, 0.3, 2.0, 50.0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(pid, n_proc, port, index, queries, out, timeout=60.0):
    args = dict(coordinator=f"127.0.0.1:{port}", n_proc=n_proc, pid=pid, index=str(index), queries=str(queries),
                out=str(out), sigmas=SIGMAS, timeout=timeout)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=with_devices(1))
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def vector_index(tmp_path_factory):
    from diffcli.data.base import split_arrays
    from diffcli.index.build import build_index

    data = np.random.default_rng(5).normal(size=(91, 10)).astype(np.float32)
    path = tmp_path_factory.mktemp("mh") / "vec.h5"
    build_index(split_arrays("mh-test", "mh-test", "vector", data), path, coarse=False)
    queries = np.random.default_rng(6).normal(size=(4, 10)).astype(np.float32)
    qpath = path.parent / "q.npy"
    np.save(qpath, queries)
    return path, qpath


def test_two_processes_equal_one(vector_index, tmp_path):
    from diffcli.denoisers.empirical import EmpiricalDenoiser
    from diffcli.index import open_index

    index, queries = vector_index
    port = free_port()
    procs = [launch(pid, 2, port, index, queries, tmp_path / "two.npy") for pid in (0, 1)]
    outs = [p.communicate(timeout=150) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    metas = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [m["count"] for m in metas] == [2, 2]
    train = open_index(index).train_data()
    n = len(train)
    # Each host loaded only its own contiguous half of the rows.
    assert metas[0]["rows"][0] == 0 and metas[0]["rows"][1] == metas[1]["rows"][0] and metas[1]["rows"][1] == n
    assert 0 < metas[0]["rows"][1] < n
    two = np.load(tmp_path / "two.npy")
    one = EmpiricalDenoiser.from_data(train, chunk=16)
    q = np.load(queries)
    for s, got in zip(SIGMAS, two, strict=True):
        np.testing.assert_allclose(got, np.asarray(one(q, s)), atol=2e-6, rtol=1e-5)


def test_missing_peer_ends_with_one_sentence(vector_index, tmp_path):
    index, queries = vector_index
    t0 = time.perf_counter()
    p = launch(0, 2, free_port(), index, queries, tmp_path / "x.npy", timeout=3.0)
    out, err = p.communicate(timeout=60)
    elapsed = time.perf_counter() - t0
    assert p.returncode == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("diffcli: error:")]
    assert len(lines) == 1 and "not every process joined" in lines[0], err[-2000:]
    assert "Check failure" not in err and "Traceback" not in err
    assert elapsed < 40


def test_config_from_flags_slurm_and_errors():
    assert resolve_config(env={}) is None
    cfg = resolve_config("10.0.0.1:1234", 4, 3, env={})
    assert (cfg.coordinator, cfg.num_processes, cfg.process_id, cfg.source) == ("10.0.0.1:1234", 4, 3, "flags")
    env = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_JOB_ID": "4100", "SLURM_STEP_NODELIST": "gpu[03-05,07]"}
    cfg = resolve_config(env=env)
    assert (cfg.coordinator, cfg.num_processes, cfg.process_id, cfg.source) == ("gpu03:61004", 8, 5, "slurm")
    assert resolve_config(env={"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
    assert first_slurm_host("node7,node9") == "node7"
    with pytest.raises(UsageError, match="all of --coordinator"):
        resolve_config("h:1", None, 0, env={})
    with pytest.raises(UsageError, match="HOST:PORT"):
        resolve_config("nohostport", 2, 0, env={})
    with pytest.raises(UsageError, match="must be in 0..1"):
        resolve_config("h:1", 2, 2, env={})
    with pytest.raises(DiffcliError, match="node list"):
        resolve_config(env={"SLURM_NTASKS": "2", "SLURM_PROCID": "0"})


def sample_cli(args, *, devices=1):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=with_devices(devices))
    return subprocess.Popen([sys.executable, "-m", "diffcli", "sample", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sample_command_on_two_hosts_equals_one_process(vector_index, tmp_path):
    from diffcli.io.samples import read_samples

    index, _ = vector_index
    common = ["--index", str(index), "--denoiser", "empirical", "--solver", "ddpm", "--steps", "5", "-n", "6",
              "--chunk-size", "16"]
    port = free_port()
    two = tmp_path / "two"
    procs = [sample_cli(common + ["--out", str(two), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                  "--process-id", str(pid), "--join-timeout", "60"], devices=2) for pid in (0, 1)]
    outs = [p.communicate(timeout=150) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    one = sample_cli(common + ["--out", str(tmp_path / "one")])
    _, err = one.communicate(timeout=150)
    assert one.returncode == 0, err[-3000:]
    a, b = read_samples(two / "samples.h5"), read_samples(tmp_path / "one" / "samples.h5")
    np.testing.assert_array_equal(a["ids"], b["ids"])
    np.testing.assert_allclose(a["samples"], b["samples"], atol=2e-5)
    assert a["settings"] == b["settings"]  # the cluster flags change nothing a merge compares


def test_sample_command_refuses_other_denoisers_on_a_cluster(vector_index, tmp_path):
    """Refused before joining, so no process waits on a peer that will not come."""
    index, _ = vector_index
    p = sample_cli(["--index", str(index), "--denoiser", "wiener", "--out", str(tmp_path / "o"),
                    "--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2", "--process-id", "1"])
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2
    assert "empirical denoiser only" in err and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "o").exists()


def test_row_ranges_are_read_through_the_index_store(vector_index, tmp_path):
    """read_rows gives open_index's rows for any range (clipped, empty ones included) and refuses what open_index
    refuses, in one sentence."""
    import h5py

    from diffcli.index import open_index
    from diffcli.index.store import read_rows

    index, _ = vector_index
    train = open_index(index).train_data()
    for lo, hi in ((0, 91), (10, 45), (80, 200), (91, 95), (30, 30)):
        np.testing.assert_array_equal(read_rows(index, lo, hi), train[lo:min(hi, 91)])
    assert read_rows(index, 5, 5).shape == (0, 10)
    np.testing.assert_array_equal(read_rows(index, 0, 2, field="heldout"), open_index(index).heldout_data()[:2])
    bad = tmp_path / "bad.h5"
    with h5py.File(index) as src, h5py.File(bad, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        dst["images"] = src["images"][:, :4]
    with pytest.raises(DiffcliError, match="'/images' has shape"):
        read_rows(bad, 0, 4)
    (tmp_path / "plain.h5").write_bytes(b"not hdf5")
    with pytest.raises(DiffcliError, match="not an HDF5 file"):
        read_rows(tmp_path / "plain.h5", 0, 4)
