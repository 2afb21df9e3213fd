"""Errors a user can cause: each carries one sentence and an exit code; the CLI prints it without a traceback."""


class DiffcliError(Exception):
    """A failure the user can act on (bad file, missing data, numerical blow-up). Exit code 1."""

    exit_code = 1


class UsageError(DiffcliError):
    """Bad options or arguments (unknown choice, out-of-range number). Exit code 2."""

    exit_code = 2


def unknown_choice(kind: str, name: str, choices) -> UsageError:
    """The error for a name that is not in a registry, listing the valid ones."""
    return UsageError(f"unknown {kind} '{name}'; choose from: {', '.join(sorted(choices))}.")


def write_error(exc: OSError, path) -> DiffcliError:
    """The one-sentence error for an OSError met while creating or writing `path` (full disk, read-only, ...)."""
    import errno
    import os

    path = os.fspath(path)
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc):
        why = "there is no space left on device" if code != errno.EDQUOT else "the disk quota is exceeded"
        return DiffcliError(f"cannot write '{path}': {why}; free some space or choose another output path.")
    if code == errno.EROFS:
        return DiffcliError(f"cannot write '{path}': its file system is read-only; choose another output path.")
    if code in (errno.EACCES, errno.EPERM):
        return DiffcliError(f"cannot write '{path}': permission denied; choose another output path.")
    if code == errno.ENOTDIR:
        return DiffcliError(f"cannot write '{path}': a part of that path is a file, not a folder.")
    if code == errno.EISDIR:
        return DiffcliError(f"cannot write '{path}': it is a folder; give a file name.")
    if code == errno.ENOENT:
        return DiffcliError(f"cannot write '{path}': its folder does not exist and cannot be created there.")
    reason = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).rstrip(".").lower()
    return DiffcliError(f"cannot write '{path}': {reason}.")
