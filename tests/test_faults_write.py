"""Faults while writing results: a full disk, an output path that cannot be written, two runs on one --out, SIGINT
and SIGTERM in the middle of a write, and existing outputs replaced only with --overwrite.

Each ends in one sentence on stderr and a non-zero exit, leaves no `.part` file, and keeps earlier results."""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from diffcli.cli import app
from diffcli.cli.common import output_folder
from diffcli.errors import DiffcliError

runner = CliRunner()
ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(res, *words, code=1):
    """Exit `code`, exactly one error sentence on stderr naming `words`, no traceback."""
    assert res.exit_code == code, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("diffcli: error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def leftovers(folder) -> list[str]:
    """Temporary or bookkeeping files a run must not leave behind."""
    found = []
    for root, dirs, files in os.walk(folder):
        found += [os.path.join(root, n) for n in files + dirs if n.endswith(".part") or n.startswith(".diffcli")]
    return found


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fake_shards(folder, n: int = 40, dim: int = 64, parts: int = 2) -> list[str]:
    """Samples files of a `--shard I/N` run made without sampling (merge only reads and checks them)."""
    from diffcli.io.samples import write_samples

    rng = np.random.default_rng(0)
    out = []
    for i in range(parts):
        ids = np.arange(i, n, parts)
        path = os.path.join(folder, f"s{i}.h5")
        write_samples(path, samples=rng.standard_normal((len(ids), 1, 8, dim // 64 * 8)).astype(np.float32),
                      noise=rng.standard_normal((len(ids), 1, 8, dim // 64 * 8)), ids=ids,
                      settings={"num_samples": n, "seed": 0, "shard": f"{i}/{parts}"}, sigmas=[80.0, 1.0, 0.0])
        out.append(path)
    return out


# --- a full disk ------------------------------------------------------------------------------------------------------


class _FullDiskFile:
    """A file opened for writing on a disk that is full: every write fails with ENOSPC."""

    def __init__(self, f):
        self._f = f

    def write(self, _data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


@pytest.fixture
def full_disk(monkeypatch):
    """Every file opened for writing (JSON, PNG, model files, HDF5 images) fails with ENOSPC on its first write."""
    real_open = builtins.open

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return _FullDiskFile(f) if any(c in mode for c in "wax+") else f

    monkeypatch.setattr(builtins, "open", fake_open)


def test_full_disk_index_build(full_disk, tmp_path):
    res = invoke("index-build", "-d", "shapes:res=16,n=30", "--no-coarse", "-o", tmp_path / "i.h5")
    refused(res, "no space left on device", "i.h5")
    assert os.listdir(tmp_path) == []


def test_full_disk_merge_leaves_no_folder(tmp_path, monkeypatch):
    shards = fake_shards(tmp_path)
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, mode="r", *a, **k: _FullDiskFile(real_open(f, mode, *a, **k))
                        if "w" in mode else real_open(f, mode, *a, **k))
    res = invoke("merge", *shards, "--out", tmp_path / "m")
    refused(res, "no space left on device", "samples.h5")
    assert not (tmp_path / "m").exists() and leftovers(tmp_path) == []


def test_full_disk_schedule_checkpoint_model_and_grid(full_disk, tmp_path):
    res = invoke("schedule-fit", "--method", "edm", "--steps", "4", "--no-plot", "--out", tmp_path / "e.json")
    refused(res, "no space left on device", "e.json")
    import jax.numpy as jnp

    from diffcli.io.images import save_grid
    from diffcli.models.file import write_tree
    from diffcli.train.checkpoint import save_checkpoint

    with pytest.raises(DiffcliError, match=r"^cannot write '.*m\.eqx\.ckpt': there is no space left on device"):
        save_checkpoint(str(tmp_path / "m.eqx.ckpt"), (jnp.ones(3),), step=1, settings={}, history=[])
    with pytest.raises(DiffcliError, match="no space left on device"):
        write_tree(str(tmp_path / "m.eqx"), {"kind": "model"}, (jnp.ones(3),))
    with pytest.raises(DiffcliError, match="no space left on device"):
        save_grid(str(tmp_path / "grid.png"), np.zeros((4, 1, 8, 8), np.float32))
    assert os.listdir(tmp_path) == []


def test_full_disk_sample(full_disk, tmp_path, digits_index_path):
    res = invoke("sample", "--index", digits_index_path, "--solver", "euler", "--steps", "2", "-n", "2",
                 "--out", tmp_path / "s")
    refused(res, "no space left on device", "samples.h5")
    assert leftovers(tmp_path) == [] and not (tmp_path / "s").exists()


def test_stale_parts_of_dead_runs_are_removed(tmp_path):
    from diffcli.io.atomic import write_json

    dead = tmp_path / ".r.json.999999999.abcd.part"  # above any pid_max: its process is gone
    alive = tmp_path / ".r.json.1.abcd.part"  # pid 1 runs: a write in progress is left alone
    other = tmp_path / ".q.json.999999999.abcd.part"  # another target's
    longer = tmp_path / ".r.json.7.999999999.abcd.part"  # a live run's part of 'r.json.7'
    for p in (dead, alive, other, longer):
        p.write_bytes(b"x" * 10)
    write_json(tmp_path / "r.json", {"a": 1})
    assert not dead.exists() and alive.exists() and other.exists() and longer.exists()


# --- the real thing: a small tmpfs that fills up (needs root and permission to mount) ---------------------------------


def mounted_tmpfs(mnt, options: str, what: str):
    """Mount a small tmpfs at `mnt` (root and permission needed), yield it, unmount; skip where it is not allowed."""
    mnt.mkdir()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True,
                            timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        pytest.skip(f"mounting {what} is not permitted here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20)


@pytest.fixture
def tiny_fs(tmp_path):
    yield from mounted_tmpfs(tmp_path / "tiny", "size=64k", "a small tmpfs")


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "diffcli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def _one_sentence(proc, *words):
    assert proc.returncode == 1, (proc.returncode, proc.stderr)  # not 139: no segmentation fault
    errors = [line for line in proc.stderr.splitlines() if line.startswith("diffcli: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(w in errors[0] for w in words), errors[0]


def test_really_full_disk_merge_and_sample_in_subprocesses(tiny_fs, tmp_path, digits_index_path):
    shards = fake_shards(tmp_path, n=400)  # 200 KB of samples for a 64 KB file system
    _one_sentence(_run("merge", *shards, "--out", tiny_fs / "m"), "no space left on device")
    _one_sentence(_run("sample", "--index", digits_index_path, "--solver", "euler", "--steps", "2", "-n", "300",
                       "--batch-size", "300", "--out", tiny_fs / "s"), "no space left on device")
    assert os.listdir(tiny_fs) == []


def test_really_full_disk_index_in_process(tiny_fs, monkeypatch):
    res = invoke("index-build", "-d", "shapes:res=16,n=300", "--no-coarse", "-o", tiny_fs / "i.h5")
    refused(res, "no space left on device")
    import diffcli.io.hdf5 as hdf5

    monkeypatch.setattr(hdf5, "IN_MEMORY_MAX", 0)  # the path for files too large to build in memory
    res = invoke("index-build", "-d", "shapes:res=16,n=300", "--no-coarse", "-o", tiny_fs / "i.h5")
    refused(res, "no space left on device")
    monkeypatch.setattr(hdf5, "_check_free_space", lambda *a: None)  # the disk fills up during the write itself
    from diffcli.io.samples import write_samples

    with pytest.raises(DiffcliError, match="no space left on device"):
        write_samples(tiny_fs / "x.h5", samples=np.ones((300, 64)), noise=np.ones((300, 64)), ids=np.arange(300),
                      settings={}, sigmas=[1.0, 0.0])
    assert os.listdir(tiny_fs) == []


@pytest.fixture
def read_only_fs(tmp_path):
    yield from mounted_tmpfs(tmp_path / "ro", "ro,size=64k", "a read-only tmpfs")


def test_read_only_file_system_is_refused_before_any_work(read_only_fs, tmp_path, monkeypatch):
    import diffcli.train.loop as loop

    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("training started"))
    shards = fake_shards(tmp_path)
    for args in (["train", "--dataset", "digits", "--out", read_only_fs / "m.eqx"],
                 ["index-build", "-d", "shapes:res=16,n=30", "-o", read_only_fs / "i.h5"],
                 ["schedule-fit", "--method", "edm", "--out", read_only_fs / "sub" / "e.json"],
                 ["merge", *shards, "--out", read_only_fs / "m"]):
        refused(invoke(*args), "read-only", str(read_only_fs))


def test_full_disk_merge_in_a_subprocess(tmp_path):
    """Always runs: the merge command in a fresh interpreter whose writes all fail with ENOSPC."""
    shards = fake_shards(tmp_path)
    script = textwrap.dedent(f"""
        import builtins, errno, sys
        real_open = builtins.open
        class Full:
            def __init__(self, f): self.f = f
            def write(self, d): raise OSError(errno.ENOSPC, "No space left on device")
            def __getattr__(self, k): return getattr(self.f, k)
            def __enter__(self): return self
            def __exit__(self, *e): self.f.close()
        builtins.open = lambda f, mode="r", *a, **k: (Full(real_open(f, mode, *a, **k)) if "w" in mode
                                                     else real_open(f, mode, *a, **k))
        sys.argv = ["diffcli", "merge", *{shards!r}, "--out", {str(tmp_path / "m")!r}]
        from diffcli.cli import main
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=300)
    _one_sentence(proc, "no space left on device")
    assert not (tmp_path / "m").exists() and leftovers(tmp_path) == []


# --- output paths that cannot be written: refused before any work ---------------------------------------------------


@pytest.mark.parametrize("where", ["proc", "file-as-folder", "folder-as-file"])
def test_unwritable_index_and_schedule_paths(tmp_path, where):
    (tmp_path / "f").write_text("a file")
    (tmp_path / "d").mkdir()
    target = {"proc": "/proc/diffcli-test/x.h5", "file-as-folder": tmp_path / "f" / "x.h5",
              "folder-as-file": tmp_path / "d"}[where]
    refused(invoke("index-build", "-d", "shapes:res=16,n=30", "--no-coarse", "-o", target), str(target))
    refused(invoke("schedule-fit", "--method", "edm", "--steps", "4", "--no-plot", "--out", target), str(target))


@pytest.mark.parametrize("where", ["proc", "file"])
def test_unwritable_out_folder(tmp_path, where):
    shards = fake_shards(tmp_path)
    (tmp_path / "f").write_text("a file")
    out = {"proc": "/proc/diffcli-test", "file": tmp_path / "f"}[where]
    refused(invoke("merge", *shards, "--out", out), str(out))
    refused(invoke("merge", *shards, "--out", tmp_path / "f" / "below"), "not a folder")


def test_train_refuses_an_unwritable_out_before_training(tmp_path, monkeypatch):
    import diffcli.train.loop as loop

    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("training started"))
    (tmp_path / "f").write_text("a file")
    for out in ("/proc/diffcli-test/m.eqx", tmp_path / "f" / "m.eqx"):
        refused(invoke("train", "--dataset", "digits", "--steps", "2", "--out", out), str(out))
    (tmp_path / "m.eqx").write_bytes(b"an earlier model")
    refused(invoke("train", "--dataset", "digits", "--steps", "2", "--out", tmp_path / "m.eqx"),
            "exists", "--overwrite", "--resume")
    assert (tmp_path / "m.eqx").read_bytes() == b"an earlier model"


# --- existing outputs are replaced only with --overwrite -------------------------------------------------------------


def test_index_build_and_schedule_fit_refuse_to_replace_without_overwrite(tmp_path):
    idx = tmp_path / "i.h5"
    args = ["index-build", "-d", "shapes:res=16,n=30", "--no-coarse", "-o", idx]
    assert invoke(*args).exit_code == 0
    before = sha(idx)
    refused(invoke(*args), "exists", "--overwrite")
    assert sha(idx) == before
    assert invoke(*args, "--overwrite").exit_code == 0
    default = ["index-build", "-d", "shapes:res=16,n=31", "--no-coarse", "--json"]  # no --out: the dataset's index
    first = invoke(*default)
    assert first.exit_code == 0, first.output
    path = json.loads(first.stdout)["out"]
    before = sha(path)
    again = invoke(*default)  # reused as `sample` would reuse it, said so, not rebuilt
    assert again.exit_code == 0 and "already at" in again.stderr and sha(path) == before
    assert json.loads(again.stdout)["out"] == path
    sched = tmp_path / "e.json"
    args = ["schedule-fit", "--method", "edm", "--steps", "4", "--no-plot", "--out", sched]
    assert invoke(*args).exit_code == 0
    refused(invoke(*args, "--steps", "5"), "exists", "--overwrite")
    assert invoke(*args, "--steps", "5", "--overwrite").exit_code == 0
    assert leftovers(tmp_path) == []


# --- one --out, one run at a time; a run never leaves a folder mixing two runs --------------------------------------


def test_a_second_run_on_the_same_out_is_refused(tmp_path):
    shards = fake_shards(tmp_path)
    out = tmp_path / "m"
    with output_folder(str(out), False) as folder:
        assert folder == str(out) and os.path.isdir(out)
        refused(invoke("merge", *shards, "--out", out), "another diffcli run is writing to", str(out))
        refused(invoke("merge", *shards, "--out", out, "--overwrite"), "another diffcli run is writing to")
    assert not out.exists()  # created by the run above, left empty: removed
    assert invoke("merge", *shards, "--out", out).exit_code == 0
    assert sorted(os.listdir(out)) == ["grid.png", "samples.h5"]


def test_overwrite_is_all_or_nothing(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "samples.h5").write_bytes(b"old samples")
    (out / "grid.png").write_bytes(b"old grid")
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(DiffcliError, match="not empty"):
        with output_folder(str(out), False):
            pass
    with pytest.raises(KeyboardInterrupt):  # interrupted after writing one of its two files
        with output_folder(str(out), True):
            (out / "samples.h5").write_bytes(b"new samples")
            raise KeyboardInterrupt
    assert (out / "samples.h5").read_bytes() == b"old samples" and (out / "grid.png").read_bytes() == b"old grid"
    with output_folder(str(out), True):  # a run that writes samples only (vector data): no old grid stays beside
        (out / "samples.h5").write_bytes(b"new samples")
    assert sorted(os.listdir(out)) == ["notes.txt", "samples.h5"]
    assert (out / "samples.h5").read_bytes() == b"new samples"


def test_a_killed_overwrite_run_is_undone_by_the_next_run(tmp_path):
    out = tmp_path / "o"
    (out / ".diffcli-previous").mkdir(parents=True)
    (out / ".diffcli-previous" / "samples.h5").write_bytes(b"complete earlier run")
    (out / "samples.h5").write_bytes(b"the killed run's")
    with pytest.raises(DiffcliError, match="not empty"):
        with output_folder(str(out), False):
            pass
    assert sorted(os.listdir(out)) == ["samples.h5"] and (out / "samples.h5").read_bytes() == b"complete earlier run"


def test_a_failed_run_leaves_no_empty_folders(tmp_path):
    out = tmp_path / "a" / "b"
    with pytest.raises(DiffcliError):
        with output_folder(str(out), False):
            raise DiffcliError("boom.")
    assert os.listdir(tmp_path) == []
    refused(invoke("merge", tmp_path / "missing", "--out", out), "does not exist")
    assert os.listdir(tmp_path) == []


# --- Ctrl-C and SIGTERM: exit 130, the earlier file kept, no .part left ---------------------------------------------

INTERRUPT = textwrap.dedent("""
    import os, signal, sys
    mode, sig, argv = sys.argv[1], getattr(signal, sys.argv[2]), sys.argv[3:]
    import h5py
    import diffcli.io.hdf5 as hdf5
    real_create, real_bytes = h5py.Group.create_dataset, hdf5.write_bytes
    def create(self, *a, **k):
        if mode in ("hdf5", "swallowed"):
            try:
                os.kill(os.getpid(), sig)  # in the middle of writing the HDF5 file
                for _ in range(1000):
                    pass
            except KeyboardInterrupt:
                if mode == "hdf5":
                    raise
                # "swallowed": as h5py does with exceptions raised inside its callbacks
        return real_create(self, *a, **k)
    def write_bytes(path, data):
        os.kill(os.getpid(), sig)  # while the finished image goes to disk
        return real_bytes(path, data)
    h5py.Group.create_dataset = create
    if mode == "bytes":
        hdf5.write_bytes = write_bytes
    sys.argv = ["diffcli", *argv]
    from diffcli.cli import main
    main()
""")


@pytest.fixture(scope="module")
def earlier_index(tmp_path_factory):
    path = tmp_path_factory.mktemp("interrupt") / "i.h5"
    assert invoke("index-build", "-d", "shapes:res=16,n=30", "--no-coarse", "-o", path).exit_code == 0
    return path


# the default run keeps one case of each signal (the swallowed Ctrl-C that was the bug, and SIGTERM); the other
# write paths run with `pytest -m slow` (each case is a fresh interpreter building an index)
@pytest.mark.parametrize("mode, sig", [pytest.param("hdf5", "SIGINT", marks=pytest.mark.slow),
                                       pytest.param("hdf5", "SIGTERM", marks=pytest.mark.slow),
                                       ("swallowed", "SIGINT"), ("bytes", "SIGTERM")])
def test_interrupted_index_build_keeps_the_earlier_index(earlier_index, mode, sig):
    before = sha(earlier_index)
    proc = subprocess.run([sys.executable, "-c", INTERRUPT, mode, sig, "index-build", "-d", "shapes:res=16,n=40",
                           "--no-coarse", "-o", str(earlier_index), "--overwrite"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr and "written to" not in proc.stderr
    assert sha(earlier_index) == before
    assert leftovers(earlier_index.parent) == []


@pytest.mark.slow  # the hooked cases above cover each moment; this one sends the signals with no hook at all
def test_signal_at_a_real_moment_of_a_real_index_build(earlier_index):
    """No hooks: SIGTERM then SIGINT sent to index-builds once they report their last stage before the write."""
    before = sha(earlier_index)
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([sys.executable, "-m", "diffcli", "index-build", "-d", "shapes:res=16,n=1500",
                                 "--no-coarse", "-o", str(earlier_index), "--overwrite"],
                                stderr=subprocess.PIPE, text=True, env=ENV)
        for line in proc.stderr:
            if "proxy features" in line:
                break
        proc.send_signal(sig)
        err = proc.stderr.read()
        assert proc.wait(timeout=300) == 130, err
        assert sha(earlier_index) == before and leftovers(earlier_index.parent) == []
