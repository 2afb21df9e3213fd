"""Faulty input is refused with one sentence (and valid input of every kind is read right): image folders in every
Pillow mode, recipes of the wrong type, inconsistent index files, schedule fits too large for memory, and samples
files that cannot be evaluated."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from diffcli.data import load_dataset
from diffcli.errors import DiffcliError, UsageError


def one_sentence(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.endswith(".") and text.count(". ") == 0, text
    return text


# --- image folders ---------------------------------------------------------------------------------------------------

PARTNER = (3, 141, 59)


def _stored(folder, img, name="a.png", **save):
    """Save `img` (and a plain grey partner, so a held-out split exists) and read the folder back at res 4."""
    folder.mkdir(exist_ok=True)
    img.save(folder / name, **save)
    Image.new("RGB", (4, 4), PARTNER).save(folder / "zz-partner.png")
    ds = load_dataset("folder:res=4", root=str(folder))
    both = np.concatenate([ds.train, ds.heldout])
    assert both.shape == (2, 3, 4, 4)
    return both[0] if both[0][:, 0, 0].tolist() != list(PARTNER) else both[1]


def _palette(transparent_index=None):
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 200, 40, 10, 0, 255, 0] + [0, 0, 0] * 253)
    if transparent_index is not None:
        p.info["transparency"] = transparent_index
    return p


grey16 = np.full((4, 4), 32768, np.uint16)
MODES = [
    ("I;16", lambda: Image.fromarray(grey16), "a.png", (128, 128, 128)),
    ("I;16B", lambda: Image.frombytes("I;16B", (4, 4), grey16.astype(">u2").tobytes()), "a.tif", (128, 128, 128)),
    ("I;16 white", lambda: Image.fromarray(np.full((4, 4), 65535, np.uint16)), "a.png", (255, 255, 255)),
    ("I", lambda: Image.fromarray(grey16.astype(np.int32)), "a.tif", (128, 128, 128)),
    ("F in [0,1]", lambda: Image.fromarray(np.full((4, 4), 0.5, np.float32)), "a.tif", (128, 128, 128)),
    ("F in [0,255]", lambda: Image.fromarray(np.full((4, 4), 64.0, np.float32)), "a.tif", (64, 64, 64)),
    ("L", lambda: Image.new("L", (4, 4), 77), "a.png", (77, 77, 77)),
    ("LA opaque", lambda: Image.new("LA", (4, 4), (77, 255)), "a.png", (77, 77, 77)),
    ("LA transparent", lambda: Image.new("LA", (4, 4), (77, 0)), "a.png", (255, 255, 255)),
    ("LA half", lambda: Image.new("LA", (4, 4), (0, 128)), "a.png", (127, 127, 127)),
    ("P", lambda: _palette(), "a.png", (200, 40, 10)),
    ("P transparent", lambda: _palette(1), "a.png", (255, 255, 255)),
    ("P other colour transparent", lambda: _palette(2), "a.png", (200, 40, 10)),
    ("CMYK", lambda: Image.new("CMYK", (4, 4), (0, 255, 0, 0)), "a.tif", (255, 0, 255)),
    ("RGB", lambda: Image.new("RGB", (4, 4), (10, 20, 30)), "a.png", (10, 20, 30)),
    ("RGBA opaque", lambda: Image.new("RGBA", (4, 4), (10, 20, 30, 255)), "a.png", (10, 20, 30)),
    ("RGBA transparent", lambda: Image.new("RGBA", (4, 4), (10, 20, 30, 0)), "a.png", (255, 255, 255)),
    ("1", lambda: Image.new("1", (4, 4), 1), "a.png", (255, 255, 255)),
    ("1 black", lambda: Image.new("1", (4, 4), 0), "a.bmp", (0, 0, 0)),
]


@pytest.mark.parametrize("label, make, name, want", MODES, ids=[m[0] for m in MODES])
def test_every_pillow_mode_is_decoded_by_its_value_range(tmp_path, label, make, name, want):
    got = _stored(tmp_path / "f", make(), name)
    for c in range(3):
        assert np.all(np.abs(got[c].astype(int) - want[c]) <= 1), (label, got[:, 0, 0], want)


def test_palette_alpha_mode_is_composited():
    from diffcli.data.folder import centre_square

    pa = Image.new("PA", (4, 4), (1, 0))
    pa.putpalette([0, 0, 0, 200, 40, 10] + [0, 0, 0] * 254)
    assert centre_square(pa, 4)[:, 0, 0].tolist() == [255, 255, 255]
    pa = Image.new("PA", (4, 4), (1, 255))
    pa.putpalette([0, 0, 0, 200, 40, 10] + [0, 0, 0] * 254)
    assert centre_square(pa, 4)[:, 0, 0].tolist() == [200, 40, 10]


def _png_header(width, height) -> bytes:
    """A PNG that declares width x height grey pixels but holds almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [9000, 100000])  # over diffcli's limit only; over Pillow's bomb limit too
def test_decompression_bomb_is_refused(tmp_path, side):
    (tmp_path / "a.png").write_bytes(_png_header(side, side))
    Image.new("RGB", (4, 4)).save(tmp_path / "b.png")
    with pytest.raises(DiffcliError, match="a.png") as exc:
        load_dataset("folder:res=4", root=str(tmp_path))
    assert "decompression bomb" in one_sentence(exc)


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "truncated"])
def test_unreadable_image_is_refused(tmp_path, content):
    if content == "truncated":
        Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.png")
        full = (tmp_path / "full.png").read_bytes()
        (tmp_path / "full.png").unlink()
        content = full[: len(full) // 2]
    (tmp_path / "a.png").write_bytes(content)
    Image.new("RGB", (4, 4)).save(tmp_path / "b.png")
    with pytest.raises(DiffcliError, match="a.png") as exc:
        load_dataset("folder:res=4", root=str(tmp_path))
    assert "could not be read as an image" in one_sentence(exc)


def test_one_image_folder_is_refused(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "only.png")
    with pytest.raises(DiffcliError, match="only 1 image") as exc:
        load_dataset("folder:res=4", root=str(tmp_path))
    one_sentence(exc)
    with pytest.raises(DiffcliError, match="only 1 sample"):
        load_dataset("digits", limit=1)


@pytest.mark.parametrize("res, words", [("0", "at least 4"), ("-3", "at least 4"), ("100000", "at most 1024"),
                                        ("big", "not a whole number")])
def test_absurd_resolution_is_a_usage_error(tmp_path, res, words):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(UsageError, match=words) as exc:
        load_dataset(f"folder:res={res}", root=str(tmp_path))
    one_sentence(exc)


def test_folder_reader_refuses_a_bad_resolution_from_python():
    from diffcli.data.folder import load_folder_images

    for res in (0, -1, 100000):
        with pytest.raises(UsageError, match="out of range"):
            load_folder_images("/nonexistent", res)


# --- recipes ---------------------------------------------------------------------------------------------------------

KINDS = {"dataset": str, "steps": int, "num_samples": int, "sigma_max": float, "golden_coarse": bool,
         "els_patch_sizes": (str, tuple), "seed": int}


def _recipe(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return str(path)


def test_recipe_values_of_the_right_type_are_returned(tmp_path):
    from diffcli.recipes import load_recipe

    path = _recipe(tmp_path, 'description = "x"\nsteps = 3\nsigma_max = 80\ngolden_coarse = true\n'
                             'els_patch_sizes = [3, 5]\n[train]\nsteps = 9\n[datasets.digits]\nsteps = 5\n'
                             'sigma_max = 2.5\n')
    got = load_recipe(path, dataset_name="digits", allowed=KINDS)
    assert got == {"steps": 5, "sigma_max": 2.5, "golden_coarse": True, "els_patch_sizes": (3, 5)}
    top = load_recipe(path, dataset_name="shapes", allowed=KINDS)
    assert top["steps"] == 3 and isinstance(top["sigma_max"], float) and top["sigma_max"] == 80.0
    # a plain list of names (values unchecked) still works
    assert load_recipe(path, dataset_name=None, allowed=list(KINDS))["sigma_max"] == 80


@pytest.mark.parametrize("text, words", [
    ('steps = "ten"', "steps = 'ten', but steps needs a whole number"),
    ("num_samples = 2.5", "num_samples = 2.5, but num_samples needs a whole number"),
    ("num_samples = 2.0", "num_samples = 2.0, but num_samples needs a whole number"),
    ("steps = true", "steps = true, but steps needs a whole number"),
    ("golden_coarse = 1", "golden_coarse = 1, but golden_coarse needs true or false"),
    ('sigma_max = "80"', "sigma_max = '80', but sigma_max needs a finite number"),
    ("sigma_max = inf", "sigma_max = inf, but sigma_max needs a finite number"),
    ("dataset = 5", "dataset = 5, but dataset needs text"),
    ("els_patch_sizes = 3", "els_patch_sizes needs text or a list"),
    ("[steps]\nx = 1", "steps = a table, but steps needs a whole number"),
    ("datasets = 5", "datasets = 5, but datasets must be a table"),
    ('datasets = ["digits"]', "datasets must be a table"),
    ("[datasets]\ndigits = 3", "datasets.digits = 3, but it must be a table"),
    ('[datasets.digits]\nsteps = "ten"', "in [datasets.digits], but steps needs a whole number"),
])
def test_recipe_values_of_the_wrong_type_are_one_sentence(tmp_path, text, words):
    from diffcli.recipes import load_recipe

    with pytest.raises(UsageError) as exc:
        load_recipe(_recipe(tmp_path, text), dataset_name="digits", allowed=KINDS)
    assert words in one_sentence(exc)


def test_recipe_table_for_a_known_name_is_refused_without_types(tmp_path):
    from diffcli.recipes import load_recipe

    with pytest.raises(UsageError, match="steps needs a single value, not a table"):
        load_recipe(_recipe(tmp_path, "[steps]\nx = 1"), dataset_name=None, allowed=("steps",))


def test_recipe_validator_callables(tmp_path):
    from diffcli.recipes import load_recipe

    def positive(v):
        if not v > 0:
            raise UsageError(f"--steps must be at least 1 (got {v}).")
        return v

    path = _recipe(tmp_path, "steps = 0")
    with pytest.raises(UsageError, match="sets steps: --steps must be at least 1") as exc:
        load_recipe(path, dataset_name=None, allowed={"steps": positive})
    one_sentence(exc)
    with pytest.raises(UsageError, match="steps = 0, which is refused"):
        load_recipe(path, dataset_name=None, allowed={"steps": lambda v: int(f"x{v}")})


def test_recipe_that_is_a_folder_or_missing_is_one_sentence(tmp_path):
    from diffcli.recipes import load_recipe

    with pytest.raises(DiffcliError, match="is a folder") as exc:
        load_recipe(str(tmp_path), dataset_name=None, allowed=KINDS)
    one_sentence(exc)
    with pytest.raises(DiffcliError, match="does not exist"):
        load_recipe(str(tmp_path / "nope.toml"), dataset_name=None, allowed=KINDS)
    with pytest.raises(UsageError, match="unknown option 'stepz'"):
        load_recipe(_recipe(tmp_path, "stepz = 3"), dataset_name=None, allowed=KINDS)


# --- index files -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_indexes(tmp_path_factory):
    from diffcli.index.build import build_index

    d = tmp_path_factory.mktemp("faults-idx")
    image = build_index(load_dataset("digits", limit=120), d / "digits.h5")
    vector = build_index(load_dataset("gmm:dim=3,components=2,n=80"), d / "gmm.h5", coarse=False)
    return {"image": image, "vector": vector}


def _replace(f, name, value):
    del f[name]
    f[name] = value


def _swap_first_two(a):
    a = a.copy()
    a[[0, 1]] = a[[1, 0]]
    return a


def _labels_of(f):
    return f["labels"][...] if "labels" in f else None


INDEX_FAULTS = [
    ("image", "order out of range", lambda f: _replace(f, "coarse/order", np.where(
        f["coarse/order"][...] == 0, 10**6, f["coarse/order"][...])), "'/coarse/order' holds row ids outside"),
    ("image", "order not a permutation", lambda f: _replace(f, "coarse/order", np.where(
        f["coarse/order"][...] == 0, 1, f["coarse/order"][...])), "not a permutation"),
    ("image", "order too short", lambda f: _replace(f, "coarse/order", f["coarse/order"][1:]),
     "'/coarse/order' has shape"),
    ("image", "offsets not monotone", lambda f: _replace(f, "coarse/offsets", _swap_first_two(
        f["coarse/offsets"][...][::-1])[::-1]), "'/coarse/offsets' must rise"),
    ("image", "offsets not ending at N", lambda f: _replace(f, "coarse/offsets", f["coarse/offsets"][...] // 2),
     "'/coarse/offsets' must rise from 0 to"),
    ("image", "offsets of the wrong length", lambda f: _replace(f, "coarse/offsets", f["coarse/offsets"][1:]),
     "'/coarse/offsets' has shape"),
    ("image", "centroids of the wrong width", lambda f: _replace(f, "coarse/centroids", f["coarse/centroids"][:, 1:]),
     "'/coarse/centroids' has shape"),
    ("image", "missing coarse list", lambda f: f.__delitem__("coarse/offsets"), "'/coarse/offsets' is missing"),
    ("image", "pca variances shorter", lambda f: _replace(f, "stats/pca_variances", f["stats/pca_variances"][1:]),
     "'/stats/pca_variances' has shape"),
    ("image", "pca components of the wrong D", lambda f: _replace(
        f, "stats/pca_components", f["stats/pca_components"][:, 1:]), "'/stats/pca_components' has shape"),
    ("image", "mean of the wrong D", lambda f: _replace(f, "stats/mean", f["stats/mean"][1:]),
     "'/stats/mean' has shape"),
    ("image", "NaN variances", lambda f: _replace(f, "stats/pca_variances", np.full_like(
        f["stats/pca_variances"][...], np.nan)), "finite"),
    ("image", "no held-out rows", lambda f: _replace(f, "heldout", f["heldout"][:0]), "0 held-out rows"),
    ("image", "unknown kind", lambda f: f.attrs.__setitem__("kind", "audio"), "kind attribute 'audio'"),
    ("image", "missing kind", lambda f: f.attrs.__delitem__("kind"), "kind attribute None"),
    ("image", "bad shape attribute", lambda f: f.attrs.__setitem__("shape", np.array([1, 8])), "shape attribute"),
    ("image", "bad n attribute", lambda f: f.attrs.__setitem__("n", "many"), "n attribute 'many'"),
    ("image", "proxy rows != N", lambda f: _replace(f, "proxy", f["proxy"][1:]), "'/proxy' has shape"),
    ("image", "proxy width wrong", lambda f: _replace(f, "proxy", f["proxy"][:, 1:]), "features per row"),
    ("image", "labels length != N", lambda f: _replace(f, "labels", _labels_of(f)[1:]), "'/labels' has shape"),
    ("image", "labels not integers", lambda f: _replace(f, "labels", _labels_of(f).astype(np.float32)),
     "'/labels' has dtype float32"),
    ("image", "negative labels", lambda f: _replace(f, "labels", -1 - _labels_of(f)), "class ids outside"),
    ("image", "images dtype", lambda f: _replace(f, "images", f["images"][...].astype(np.float32)),
     "'/images' has dtype float32"),
    ("image", "images shape", lambda f: _replace(f, "images", f["images"][:, :, 1:]), "'/images' has shape"),
    ("image", "images missing rows", lambda f: _replace(f, "images", f["images"][1:]), "'/images' has shape"),
    ("image", "heldout shape", lambda f: _replace(f, "heldout", f["heldout"][:, :, 1:]), "'/heldout' has shape"),
    ("image", "resolution attribute", lambda f: f.attrs.__setitem__("resolution", 9), "resolution attribute 9"),
    ("image", "images a group", lambda f: (f.__delitem__("images"), f.create_group("images")),
     "'/images' is not a dataset"),
    ("image", "n_heldout attribute", lambda f: f.attrs.__setitem__("n_heldout", 3), "n_heldout attribute 3"),
    ("vector", "vector images as uint8", lambda f: _replace(f, "images", f["images"][...].astype(np.uint8)),
     "'/images' has dtype uint8"),
    ("vector", "NaN rows", lambda f: _replace(f, "images", np.full_like(f["images"][...], np.nan)), "NaN"),
    ("vector", "missing proxy basis", lambda f: f.__delitem__("stats/proxy_basis"), "'/stats/proxy_basis' is missing"),
    ("vector", "proxy basis of the wrong D", lambda f: _replace(f, "stats/proxy_basis", f["stats/proxy_basis"][1:]),
     "'/stats/proxy_basis' has shape"),
    ("vector", "gmm of the wrong D", lambda f: _replace(f, "gmm/means", f["gmm/means"][:, 1:]), "'/gmm' parameters"),
    ("vector", "negative residual", lambda f: f.attrs.__setitem__("residual_variance", -1.0),
     "residual_variance attribute -1.0"),
]


@pytest.mark.parametrize("which, label, corrupt, words", INDEX_FAULTS, ids=[c[1] for c in INDEX_FAULTS])
def test_inconsistent_index_is_refused_when_opened(tiny_indexes, tmp_path, which, label, corrupt, words):
    import shutil

    import h5py

    from diffcli.index import open_index

    copy = tmp_path / "bad.h5"
    shutil.copy(tiny_indexes[which], copy)
    open_index(copy)  # valid before the fault
    with h5py.File(copy, "a") as f:
        corrupt(f)
    with pytest.raises(DiffcliError) as exc:
        open_index(copy)
    text = one_sentence(exc)
    assert "is not a usable diffcli index" in text and words in text, (label, text)


def test_index_attrs_checks_the_metadata(tiny_indexes, tmp_path):
    import shutil

    import h5py

    from diffcli.index.store import index_attrs

    assert index_attrs(tiny_indexes["image"])["kind"] == "image"
    copy = tmp_path / "bad.h5"
    shutil.copy(tiny_indexes["image"], copy)
    with h5py.File(copy, "a") as f:
        f.attrs["kind"] = "audio"
    with pytest.raises(DiffcliError, match="kind attribute 'audio'"):
        index_attrs(copy)
    with pytest.raises(DiffcliError, match="is a folder"):
        index_attrs(tmp_path)


# --- schedule fits ---------------------------------------------------------------------------------------------------

def _curve():
    from diffcli.schedules.loss import LossCurve

    sig = np.exp(np.linspace(np.log(80.0), np.log(0.002), 12))
    return LossCurve(sig, 0.25 / (1 + 0.25 / sig**2) / 0.25, np.full(12, np.nan), None)


def test_las_dynamic_programme_refuses_steps_beyond_its_memory():
    from diffcli.schedules import las
    from diffcli.schedules.fit import fit_schedule

    with pytest.raises(UsageError) as exc:
        fit_schedule(_curve(), method="las", steps=100000)
    text = one_sentence(exc)
    assert "--steps 100000" in text and "298 GiB" in text and "at most 8192 steps" in text, text
    assert las.max_fit_steps("lambda") == 8192 and las.fit_memory(8192, "dp") <= 2 << 30
    las.check_fit_memory(8192, "lambda")  # the largest that fits is accepted
    with pytest.raises(UsageError, match="at most 8192"):
        las.check_fit_memory(8193, "weighted")
    with pytest.raises(UsageError, match="a grid of 9000 candidate sigmas"):
        las.fit_las(_curve(), 10, grid_size=9000)
    las.check_fit_memory(100000, "quantile")  # linear memory: large step counts are fine
    with pytest.raises(UsageError, match="quantile placement"):
        las.check_fit_memory(10**9, "quantile")
    assert len(fit_schedule(_curve(), method="las", steps=10)["sigmas"]) == 11  # valid fits are unchanged


def test_curve_grid_and_ays_pair_table_limits():
    from diffcli.schedules.fit import curve_grid, fit_schedule, max_curve_points
    from diffcli.schedules.loss import LossCurve

    assert max_curve_points() == 9459
    assert len(curve_grid(0.002, 80.0, 40)) == 40
    with pytest.raises(UsageError, match="--grid-points 100000 would need about 224 GiB") as exc:
        curve_grid(0.002, 80.0, 100000)
    one_sentence(exc)
    levels = max_curve_points() + 1
    sig = np.exp(np.linspace(np.log(80.0), np.log(0.002), levels))
    big = LossCurve(sig, 1 / (1 + 1 / sig**2), np.full(levels, np.nan), None)
    with pytest.raises(UsageError, match=f"has {levels} noise levels"):
        fit_schedule(big, method="ays", steps=10)


def test_schedule_fit_cli_refuses_huge_steps(tmp_path):
    from typer.testing import CliRunner

    from diffcli.cli import app

    log = tmp_path / "loss.csv"
    sig = np.exp(np.linspace(np.log(80.0), np.log(0.002), 12))
    log.write_text("sigma,loss\n" + "".join(f"{s},{1 / (1 + 1 / s**2)}\n" for s in sig))
    res = CliRunner().invoke(app, ["schedule-fit", "--loss-file", str(log), "--steps", "100000",
                                   "--out", str(tmp_path / "s.json")])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("diffcli: error: --steps 100000") and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output and not (tmp_path / "s.json").exists()


# --- evaluate --------------------------------------------------------------------------------------------------------

def _set_attr(key, value):
    return lambda f: f.attrs.__setitem__(key, value)


def _set_data(key, value):
    def change(f):
        del f[key]
        f[key] = value

    return change


SAMPLE_FAULTS = [
    ("nan", None, "holds 1 of 6 samples with NaN or infinite values (the first is sample id 2)"),
    ("empty", None, "holds no samples"),
    ("bad json", _set_attr("settings_json", "{not json"), "settings_json attribute that is not valid JSON"),
    ("json list", _set_attr("settings_json", "[1, 2]"), "not a JSON object of settings"),
    ("json number", _set_attr("settings_json", 5), "settings_json attribute that is not text"),
    ("seed text", _set_attr("settings_json", '{"seed": "zero"}'), "records the seed 'zero'"),
    ("ids short", _set_data("ids", np.arange(3)), "has 3 sample ids of dtype int64 for 6 samples"),
    ("ids repeated", _set_data("ids", np.zeros(6, np.int64)), "repeats sample ids"),
    ("samples 1-D", _set_data("samples", np.zeros(6, np.float32)), "holds samples of shape (6,)"),
]


@pytest.fixture(scope="module")
def sample_files(tiny_indexes, tmp_path_factory):
    import shutil

    import h5py

    from diffcli.io.samples import write_samples

    d = tmp_path_factory.mktemp("faults-samples")
    x = np.random.default_rng(0).uniform(-1, 1, (6, 1, 8, 8)).astype(np.float32)
    paths = {}
    with_nan = np.where(np.arange(6)[:, None, None, None] == 2, np.nan, x)
    for name, arr in (("ok", x), ("nan", with_nan), ("empty", x[:0])):
        paths[name] = str(d / f"{name}.h5")
        write_samples(paths[name], samples=arr, noise=arr, ids=np.arange(len(arr)), settings={"seed": 0},
                      sigmas=[80.0, 0.0])
    for label, change, _ in SAMPLE_FAULTS:
        if change is not None:
            paths[label] = str(d / f"{label.replace(' ', '-')}.h5")
            shutil.copy(paths["ok"], paths[label])
            with h5py.File(paths[label], "a") as f:
                change(f)
    return paths


@pytest.mark.parametrize("label, change, words", SAMPLE_FAULTS, ids=[c[0] for c in SAMPLE_FAULTS])
@pytest.mark.parametrize("against", ["index", "reference"])
def test_evaluate_refuses_unusable_samples_in_one_sentence(sample_files, tiny_indexes, label, change, words, against):
    from typer.testing import CliRunner

    from diffcli.cli import app

    extra = ["--index", tiny_indexes["image"]] if against == "index" else ["--reference", sample_files["ok"]]
    res = CliRunner().invoke(app, ["evaluate", sample_files[label], *extra, "--json"])
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffcli: error: samples file '") and words in lines[0], lines
    assert "Traceback" not in res.output and res.stdout == ""


def test_evaluate_refuses_a_nan_reference_and_a_missing_seed(sample_files, tmp_path):
    import shutil

    import h5py
    from typer.testing import CliRunner

    from diffcli.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", sample_files["ok"], "--reference", sample_files["nan"]])
    assert res.exit_code == 1 and "reference file '" in res.stderr and "NaN" in res.stderr
    no_settings = tmp_path / "no-settings.h5"
    shutil.copy(sample_files["ok"], no_settings)
    with h5py.File(no_settings, "a") as f:
        del f.attrs["settings_json"]
    res = runner.invoke(app, ["evaluate", str(no_settings), "--reference", sample_files["ok"]])
    assert res.exit_code == 1 and "records no seed setting" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_evaluate_library_checks_its_inputs(sample_files):
    from diffcli.io.samples import read_samples
    from diffcli.metrics.evaluate import evaluate

    ok, bad = read_samples(sample_files["ok"]), read_samples(sample_files["nan"])
    assert evaluate(ok, reference=ok)["n_samples"] == 6
    with pytest.raises(DiffcliError, match="the reference holds 1 of 6 samples with NaN"):
        evaluate(ok, reference=bad)
