"""`diffcli merge`: seed shards joined == one-shot run; mismatched settings and overlapping/missing ids refused."""

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from diffcli.cli import app

runner = CliRunner()
COMMON = ["-d", "digits", "--steps", "3", "--solver", "euler", "--seed", "7", "-n", "8", "--batch-size", "4"]


def sample(out, *extra):
    res = runner.invoke(app, ["sample", *COMMON, "-o", str(out), *extra])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("merge")
    one = sample(tmp / "one")
    shards = [sample(tmp / f"s{i}", "--shard", f"{i}/2") for i in range(2)]
    return tmp, one, shards


def h5_content(path):
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][...] for k in f}
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
    return arrays, attrs


def test_shards_merge_into_the_one_shot_file(runs):
    tmp, one, shards = runs
    res = runner.invoke(app, ["merge", str(shards[1]), str(shards[0]), "--out", str(tmp / "merged")])
    assert res.exit_code == 0, res.output
    got, got_attrs = h5_content(tmp / "merged" / "samples.h5")
    want, want_attrs = h5_content(one / "samples.h5")
    assert set(got) == set(want)
    np.testing.assert_array_equal(got["ids"], np.arange(8))
    for key in want:  # every shard runs the one-shot run's batch shape (4), the same program: bit-identical
        np.testing.assert_array_equal(got[key], want[key])
    assert got_attrs == want_attrs
    assert (tmp / "merged" / "grid.png").read_bytes() == (one / "grid.png").read_bytes()


def test_shards_of_any_size_run_the_one_shot_batch_shape_and_merge_bit_identically(runs):
    """Three shards of 8 samples hold 3, 3 and 2 ids, yet each pads its batch to the one-shot run's shape (4): the
    same compiled program on the same inputs, so the merge is the one-shot file bit for bit (the promise)."""
    tmp, one, _ = runs
    shards = [sample(tmp / f"t{i}", "--shard", f"{i}/3") for i in range(3)]
    res = runner.invoke(app, ["merge", *map(str, shards), "--out", str(tmp / "merged3")])
    assert res.exit_code == 0, res.output
    got, got_attrs = h5_content(tmp / "merged3" / "samples.h5")
    want, want_attrs = h5_content(one / "samples.h5")
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    assert got_attrs == want_attrs


def test_shard_files_really_are_partial(runs):
    _, _, shards = runs
    ids = [h5_content(s / "samples.h5")[0]["ids"] for s in shards]
    np.testing.assert_array_equal(ids[0], [0, 2, 4, 6])
    np.testing.assert_array_equal(ids[1], [1, 3, 5, 7])


def test_missing_shard_is_refused(runs):
    tmp, _, shards = runs
    res = runner.invoke(app, ["merge", str(shards[0]), "--out", str(tmp / "m-missing")])
    assert res.exit_code == 1
    assert "4 of 8 sample ids are missing (first: 1)" in res.output
    assert "Traceback" not in res.output


def test_overlap_is_refused(runs):
    tmp, _, shards = runs
    res = runner.invoke(app, ["merge", str(shards[0]), str(shards[1]), str(shards[0] / "samples.h5"),
                              "--out", str(tmp / "m-overlap")])
    assert res.exit_code == 1
    assert "sample id 0 is in both" in res.output


def test_mismatched_settings_are_refused(runs):
    tmp, _, shards = runs
    other = sample(tmp / "other-seed", "--shard", "1/2", "--seed", "8")
    res = runner.invoke(app, ["merge", str(shards[0]), str(other), "--out", str(tmp / "m-mismatch")])
    assert res.exit_code == 1
    assert "seed=8" in res.output and "seed=7" in res.output and "only shards of one run" in res.output


def test_not_a_samples_file_and_nonempty_out(runs, tmp_path):
    tmp, _, shards = runs
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not hdf5")
    res = runner.invoke(app, ["merge", str(bogus), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "truncated" in res.output
    res = runner.invoke(app, ["merge", str(shards[0]), str(shards[1]), "--out", str(shards[0])])
    assert res.exit_code == 1 and "not empty" in res.output
