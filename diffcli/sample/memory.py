"""Peak memory of a run, as `sample --json` reports it: per device where the backend counts it, else the process."""

from __future__ import annotations

import resource
import sys

import jax


def process_peak_rss() -> int:
    """The process's peak resident set in bytes: Linux's VmHWM (this program's own, whereas ru_maxrss keeps the
    peak of the process it was forked from), else getrusage's ru_maxrss (kilobytes on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_memory() -> list[dict]:
    """[{device, peak_bytes, measure}]: each local device's peak_bytes_in_use (GPU, TPU), or, where the backend
    keeps no such count (CPU), one entry for the whole process's peak resident set."""
    out = []
    for device in jax.local_devices():
        try:
            stats = device.memory_stats() or {}
        except Exception:  # backends without allocator statistics raise or return None
            stats = {}
        if "peak_bytes_in_use" in stats:
            out.append({"device": str(device), "peak_bytes": int(stats["peak_bytes_in_use"]),
                        "measure": "device peak_bytes_in_use"})
    if not out:
        out.append({"device": "process", "peak_bytes": process_peak_rss(), "measure": "process peak RSS"})
    return out
