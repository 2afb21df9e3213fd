"""Write to a temporary name beside the target and rename on success, so no half-written file is ever seen.

The temporary name is `.NAME.PID.RANDOM.part`: a later write of the same target removes the parts whose process is
gone (a run killed by SIGKILL or a power cut). Any OSError while writing (full disk, read-only or vanished folder)
becomes one DiffcliError sentence naming the file, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile

from diffcli.errors import DiffcliError, write_error
from diffcli.io import signals

PART = ".part"


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's folder; on success rename it onto `path`, on failure remove it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise DiffcliError(f"cannot write '{path}': it is a folder; give a file name.")
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_parts(path)
        fd, tmp = tempfile.mkstemp(prefix=_part_prefix(path) + f"{os.getpid()}.", suffix=PART, dir=folder)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual permissions
    except OSError as exc:
        raise write_error(exc, path) from None
    try:
        yield tmp
        with signals.commit_section():
            os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if signals.interrupted() and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # an interrupt that a library turned into another error
        if isinstance(exc, OSError) and not isinstance(exc, DiffcliError):
            raise write_error(exc, path) from None
        raise


def _part_prefix(path: str) -> str:
    return "." + os.path.basename(path) + "."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_parts(path) -> list[str]:
    """Remove `.NAME.PID.*.part` files of `path` whose process no longer runs; returns what was removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    prefix = _part_prefix(path)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(PART)):
            continue
        parts = name[len(prefix):-len(PART)].split(".")  # PID and mkstemp's random part (no dots in it)
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) == os.getpid() or _alive(int(parts[0])):
            continue
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
    return removed


def check_writable(path, *, what: str = "output file") -> None:
    """Before any long computation: refuse a file path that cannot be written (a folder there, a file where a folder
    is needed, a read-only or virtual file system such as /proc) with one sentence. Creates nothing that stays."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DiffcliError(f"{what} '{path}' is a folder; give a file name.")
    probe_folder(os.path.dirname(os.path.abspath(path)), target=path)


def probe_folder(folder, *, target=None) -> None:
    """Create and remove a probe file in `folder` (or, if it does not exist yet, in its nearest existing ancestor)."""
    folder = os.path.abspath(os.fspath(folder))
    target = folder if target is None else target
    existing = folder
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise write_error(OSError(errno.ENOTDIR, "not a folder"), target)
    if os.path.realpath(existing).startswith(("/proc/", "/sys/")) or os.path.realpath(existing) in ("/proc", "/sys"):
        raise DiffcliError(f"cannot write '{target}': it is on a virtual file system (/proc, /sys); "
                           "choose another output path.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".diffcli-probe.", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise write_error(exc, target) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, data) -> None:
    """Write a bytes-like object atomically, in pieces (so a full disk is an ordinary OSError)."""
    view = memoryview(data).cast("B")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for lo in range(0, len(view), 1 << 24):
            f.write(view[lo:lo + (1 << 24)])


def write_json(path, obj) -> None:
    """Write a JSON document atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
