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
