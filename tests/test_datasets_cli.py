"""`diffcli datasets list|info|verify`: preparation state, layout / count / checksum errors as one sentence."""

import hashlib
import json
import shutil

import pytest
from typer.testing import CliRunner

from diffcli.cli import app
from diffcli.data.manifests import REPO
from tests.helpers.importer_files import make_cifar, make_mnist

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCLI_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("DIFFCLI_MANIFESTS", raising=False)


def error_lines(output):
    return [ln for ln in output.splitlines() if ln.startswith("diffcli: error:")]


def test_list_shows_which_are_prepared(tmp_path):
    make_mnist(tmp_path / "data" / "mnist")
    res = runner.invoke(app, ["datasets", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)["datasets"]}
    assert rows["mnist"]["prepared"] and rows["mnist"]["layout"] == "idx-gz"
    assert rows["mnist"]["root"] == str(tmp_path / "data" / "mnist")
    assert not rows["afhq"]["prepared"] and not rows["cifar10"]["prepared"]
    assert rows["digits"]["prepared"] and rows["digits"]["root"] is None
    assert set(rows) >= {"mnist", "fashion-mnist", "cifar10", "celebahq", "afhq", "imagenet64", "digits"}
    table = runner.invoke(app, ["datasets", "list"])
    assert table.exit_code == 0 and "afhq" in table.output


def test_info_names_licence_root_and_layout():
    res = runner.invoke(app, ["datasets", "info", "afhq"])
    assert res.exit_code == 0, res.output
    assert "CC BY-NC 4.0" in res.output and "train/cat" in res.output and "afhq" in res.output
    bad = runner.invoke(app, ["datasets", "info", "nope"])
    assert bad.exit_code == 2 and "choose from" in error_lines(bad.output)[0]


def test_verify_wrong_layout_names_the_missing_file(tmp_path):
    root = tmp_path / "m"
    make_mnist(root)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    res = runner.invoke(app, ["datasets", "verify", "mnist", "--root", str(root)])
    assert res.exit_code == 1
    (line,) = error_lines(res.output)
    assert "not prepared" in line and "t10k-labels-idx1-ubyte.gz" in line and "mnist.toml" in line


def test_verify_wrong_counts_against_the_real_manifest(tmp_path):
    make_mnist(tmp_path / "data" / "mnist")
    res = runner.invoke(app, ["datasets", "verify", "mnist", "--no-checksums"])
    assert res.exit_code == 1
    (line,) = error_lines(res.output)
    assert "holds 12 records, the manifest expects 60000" in line


def test_verify_checksum_mismatch_against_published_md5(tmp_path):
    make_cifar(tmp_path / "c", archive=True)
    res = runner.invoke(app, ["datasets", "verify", "cifar10", "--root", str(tmp_path / "c"), "--json"])
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["layout"] == "archive" and not out["ok"]
    assert "c32a1d4ab5d03f1284b67883e8d87530" in out["error"] and "download it again" in out["error"]


def write_test_manifest(folder, root):
    """A copy of the MNIST manifest whose counts and md5 sums are those of the tiny files (real verification path)."""
    text = (REPO + "/mnist.toml")
    text = open(text).read()
    for name, n in (("train", 12), ("t10k", 5)):
        for kind in ("images", "labels"):
            fname = f"{name}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
            digest = hashlib.md5((root / fname).read_bytes()).hexdigest()
            start = text.index(f'path = "{fname}"')
            end = text.index("}", start)
            text = text[:start] + f'path = "{fname}", format = "idx-gz", count = {n}, md5 = "{digest}" ' + text[end:]
    folder.mkdir()
    (folder / "mnist.toml").write_text(text)


def test_verify_passes_then_detects_a_changed_byte(tmp_path, monkeypatch):
    root = tmp_path / "m"
    make_mnist(root)
    write_test_manifest(tmp_path / "manifests", root)
    monkeypatch.setenv("DIFFCLI_MANIFESTS", str(tmp_path / "manifests"))
    res = runner.invoke(app, ["datasets", "verify", "mnist", "--root", str(root), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["ok"] and {c["what"] for c in out["checks"]} == {"present", "count", "md5"}
    # Same length, one byte different: only the checksum can notice.
    shutil.copy(root / "train-labels-idx1-ubyte.gz", tmp_path / "orig.gz")
    raw = bytearray((root / "train-labels-idx1-ubyte.gz").read_bytes())
    raw[-5] ^= 0xFF
    (root / "train-labels-idx1-ubyte.gz").write_bytes(bytes(raw))
    res = runner.invoke(app, ["datasets", "verify", "mnist", "--root", str(root)])
    assert res.exit_code == 1
    (line,) = error_lines(res.output)
    assert "train-labels-idx1-ubyte.gz' has md5" in line
