"""Dataset manifests (data_manifests/<name>.toml): expected layout, counts, checksums, licence, how to get the data.

A manifest lists one or more layouts; a dataset is prepared when every entry of one layout is present. Entries
name a file, folder or glob below the root, its format (which fixes how records are counted) and, only where the
published archive is fixed, its md5/sha256.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tomllib
from dataclasses import dataclass, field

from diffcli.data.importers.common import data_home, dataset_root
from diffcli.errors import DiffcliError, unknown_choice

PACKAGED = os.path.join(os.path.dirname(__file__), "importers", "manifests")
REPO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data_manifests")
FORMATS = ("idx-gz", "cifar-bin", "tar-gz", "npz", "image-dir", "edm", "file")


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the root; may contain * (glob, recursive with **)
    format: str
    count: int | None = None  # exact number of records (summed over a glob)
    min_count: int | None = None  # at least this many (where published versions differ)
    files: int | None = None  # how many files a glob must match
    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Layout:
    name: str
    entries: tuple[Entry, ...]
    note: str = ""


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    resolution: int
    channels: int
    classes: int
    train: int
    heldout: int
    licence: str
    homepage: str
    how_to_get: str
    checksums: str  # what is fixed and what is not
    layouts: tuple[Layout, ...]
    path: str = ""
    extra: dict = field(default_factory=dict)


def manifest_dirs() -> list[str]:
    """Where manifests are looked for: $DIFFCLI_MANIFESTS, the copy inside the package, the repository folder."""
    dirs = [os.environ.get("DIFFCLI_MANIFESTS"), PACKAGED, REPO]
    return [d for d in dirs if d and os.path.isdir(d)]


def manifest_names() -> list[str]:
    names = set()
    for d in manifest_dirs():
        names.update(f[:-5] for f in os.listdir(d) if f.endswith(".toml"))
    return sorted(names)


def _entry(raw: dict, where: str) -> Entry:
    if raw.get("format") not in FORMATS:
        raise DiffcliError(f"{where}: entry '{raw.get('path')}' has format '{raw.get('format')}'; "
                           f"use one of {', '.join(FORMATS)}.")
    return Entry(**{k: raw.get(k) for k in Entry.__dataclass_fields__})


def load_manifest(name: str) -> Manifest:
    """The manifest of dataset `name` (first found in manifest_dirs())."""
    for d in manifest_dirs():
        path = os.path.join(d, f"{name}.toml")
        if os.path.isfile(path):
            break
    else:
        raise unknown_choice("dataset manifest", name, manifest_names())
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        layouts = tuple(
            Layout(lay["name"], tuple(_entry(e, path) for e in lay["entries"]), lay.get("note", ""))
            for lay in raw["layouts"]
        )
        keys = ("title", "resolution", "channels", "classes", "train", "heldout", "licence", "homepage",
                "how_to_get", "checksums")
        return Manifest(name=raw["name"], layouts=layouts, path=path, **{k: raw[k] for k in keys},
                        extra={k: v for k, v in raw.items() if k not in keys + ("name", "layouts")})
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise DiffcliError(f"the manifest '{path}' is malformed ({type(exc).__name__}: {exc}).") from None


def _matches(root: str, entry: Entry) -> list[str]:
    if "*" in entry.path:
        return sorted(glob.glob(os.path.join(root, entry.path), recursive=True))
    path = os.path.join(root, entry.path)
    return [path] if os.path.exists(path) else []


def present(root: str, layout: Layout) -> bool:
    """Every entry of the layout exists under root (no reading)."""
    return all(_matches(root, e) for e in layout.entries)


def prepared_layout(manifest: Manifest, root: str | None = None) -> Layout | None:
    root = dataset_root(manifest.name, root)
    return next((lay for lay in manifest.layouts if present(root, lay)), None)


def count_records(path: str, fmt: str) -> int | None:
    """Records in one file/folder, read from headers where the format allows (None: not countable)."""
    if fmt == "idx-gz":
        from diffcli.data.importers.mnist import idx_count

        return idx_count(path)
    if fmt == "cifar-bin":
        from diffcli.data.importers.cifar import record_count

        return record_count(path)
    if fmt == "npz":
        from diffcli.data.importers.imagenet64 import npz_count

        return npz_count(path)
    if fmt == "image-dir":
        from diffcli.data.folder import list_images

        return len(list_images(path))
    if fmt == "edm":
        from diffcli.data.importers.imagenet64 import EdmSource

        return len(EdmSource(path).entries())
    return None


def file_digest(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Check:
    entry: str
    what: str  # "present", "count", "md5", "sha256", "files"
    ok: bool
    detail: str


def check_entry(root: str, entry: Entry, *, checksums: bool = True) -> list[Check]:
    """Checks of one entry: present, number of files, record count, checksum (each a Check)."""
    found = _matches(root, entry)
    if not found:
        return [Check(entry.path, "present", False, f"'{entry.path}' is missing under '{root}'")]
    checks = [Check(entry.path, "present", True, f"{len(found)} match(es)")]
    if entry.files is not None:
        checks.append(Check(entry.path, "files", len(found) == entry.files,
                            f"{len(found)} files match '{entry.path}', the manifest expects {entry.files}"))
    if entry.count is not None or entry.min_count is not None:
        counts = [count_records(p, entry.format) for p in found]
        total = sum(c for c in counts if c is not None)
        if entry.count is not None:
            checks.append(Check(entry.path, "count", total == entry.count,
                                f"'{entry.path}' holds {total} records, the manifest expects {entry.count}"))
        else:
            checks.append(Check(entry.path, "count", total >= entry.min_count,
                                f"'{entry.path}' holds {total} records, "
                                f"the manifest expects at least {entry.min_count}"))
    for algo in ("md5", "sha256"):
        want = getattr(entry, algo)
        if want and checksums:
            got = file_digest(found[0], algo)
            checks.append(Check(entry.path, algo, got == want.lower(),
                                f"'{entry.path}' has {algo} {got}, "
                                f"the manifest expects {want.lower()}; download it again"))
    return checks


@dataclass
class Verification:
    name: str
    root: str
    layout: str | None
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return self.layout is not None and all(c.ok for c in self.checks)

    def first_problem(self) -> str:
        bad = next((c for c in self.checks if not c.ok), None)
        return bad.detail if bad else ""


def verify(name: str, root: str | None = None, *, checksums: bool = True,
           manifest: Manifest | None = None) -> Verification:
    """Check layout, counts and checksums of a dataset under root (default $DIFFCLI_DATA/<name>)."""
    manifest = load_manifest(name) if manifest is None else manifest
    root = dataset_root(name, root)
    layout = prepared_layout(manifest, root)
    if layout is None:
        # Report what the first layout lacks, so the message names a concrete file.
        first = manifest.layouts[0]
        checks = [c for e in first.entries for c in check_entry(root, e, checksums=False)[:1]]
        return Verification(name, root, None, checks)
    return Verification(name, root, layout.name,
                        [c for e in layout.entries for c in check_entry(root, e, checksums=checksums)])


def describe_missing(v: Verification) -> str:
    """One sentence for a dataset that is not prepared or fails a check."""
    if v.layout is None:
        missing = next((c.detail for c in v.checks if not c.ok), f"nothing was found under '{v.root}'")
        return (f"dataset '{v.name}' is not prepared: {missing}; data_manifests/{v.name}.toml "
                f"(`diffcli datasets info {v.name}`) describes what to put there.")
    return f"dataset '{v.name}' under '{v.root}' failed verification: {v.first_problem()}."


__all__ = ["Manifest", "load_manifest", "manifest_names", "verify", "prepared_layout", "data_home", "describe_missing"]
