"""SIGINT and SIGTERM as KeyboardInterrupt, remembered in a flag so that an interrupt swallowed inside a C library
(h5py drops exceptions raised in its callbacks) still stops the run before any file is renamed into place."""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"signal": None}


def _handler(signum, _frame):
    _state["signal"] = signum
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_raise():
    """While inside, SIGINT and SIGTERM raise KeyboardInterrupt and set the flag; the old handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    _state["signal"] = None
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def interrupted() -> bool:
    """Whether SIGINT or SIGTERM arrived since the command started (even if its exception was swallowed)."""
    return _state["signal"] is not None


def clear() -> None:
    _state["signal"] = None


@contextlib.contextmanager
def commit_section():
    """Hold SIGINT/SIGTERM back while a finished file is renamed into place; raise KeyboardInterrupt first if one
    arrived (or is pending) before the rename, so an interrupted run keeps the earlier file."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        if interrupted() or (main and set(SIGNALS) & signal.sigpending()):
            raise KeyboardInterrupt
        yield
    finally:
        if main:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # a signal held back is delivered here


@contextlib.contextmanager
def saving_after_interrupt():
    """Let a deliberate save on the way out of an interrupt (a training checkpoint) be renamed into place; an
    interrupt during that save still stops it."""
    saved, _state["signal"] = _state["signal"], None
    try:
        yield
    finally:
        _state["signal"] = _state["signal"] or saved
