"""Count how often JAX traces a Python function: a second call with new values of the same shapes must not retrace.

The counter is incremented inside the traced function, so it counts traces (each one a compilation), and relies on
no private JAX API.
"""

from __future__ import annotations

import functools


class TraceCounter:
    """`f = jax.jit(counter.wrap(fn))`; after the calls, `counter.count` is the number of times `fn` was traced."""

    def __init__(self) -> None:
        self.count = 0

    def wrap(self, fn):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            self.count += 1  # runs only while JAX traces: a cached call never reaches Python
            return fn(*args, **kwargs)

        return counted
