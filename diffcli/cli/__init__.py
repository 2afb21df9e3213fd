"""The diffcli command line: one thin module per command; errors are one sentence on stderr, never a traceback."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="diffcli",
    help="Fast, accurate diffusion sampling: analytical denoisers, parallel solvers, fitted schedules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each command module registers itself on `app` when imported (see cli/common.py: `command`).
from diffcli.cli import datasets, evaluate, index_build, merge, sample, schedule_fit, train  # noqa: E402,F401


def main() -> None:
    """Console entry point: Ctrl-C or SIGTERM at any moment, even before a command starts, exits 130."""
    import signal
    import sys

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("diffcli: error: interrupted; no half-written file was left behind.\n")
        sys.exit(130)
