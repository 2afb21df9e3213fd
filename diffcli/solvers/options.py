"""Each solver's own options (flag, default, help, check); `sample_<name>(..., **options)` reads them from here.

The defaults are the configuration benchmarks/bench_solvers.py measured best. This module imports no JAX, so the
command line can list every flag cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffcli.options import NoOptions, Options, option


@dataclass(frozen=True)
class DdpmOptions(Options):
    eta: float = option(1.0, help="ddpm: 1 = ancestral DDPM, 0 = DDIM (deterministic).", minimum=0.0,
                        maximum=1.0)


@dataclass(frozen=True)
class PicardOptions(Options):
    picard_mode: str = option("sde", help="The sequential sampler Picard converges to: sde (ddpm) or ode (euler).",
                              choices=("sde", "ode"))
    picard_blocks: int | None = option(None, kind=int, minimum=1,
                                       help="Fixed blocks (PIADM): split the grid into this many blocks.")
    picard_iters: int | None = option(None, kind=int, minimum=1,
                                      help="Fixed blocks: rounds per block (default ceil(log(d / 1e-4))).")
    picard_tol: float | None = option(None, kind=float, positive=True,
                                      help="Sliding window (ParaDiGMS): accept a point when its change is below this.")
    picard_window: int | None = option(None, kind=int, minimum=1, help="Points refined per round (default 32).")
    picard_anderson: int | None = option(None, kind=int, minimum=0, help="Anderson memory M (0 = off).")
    picard_newton: bool = option(False, help="Quasi-Newton rounds (secant slope of D); fewest rounds.")


@dataclass(frozen=True)
class CollocationOptions(Options):
    colloc_nodes: int = option(8, minimum=1, help="Chebyshev nodes per window.")
    colloc_iters: int | None = option(None, kind=int, minimum=1,
                                      help="Fixed-point rounds per window (default: the node count).")
    colloc_tol: float | None = option(None, kind=float, positive=True,
                                      help="Stop a window's rounds when the relative change is below this.")
    colloc_windows: int = option(20, minimum=1, help="Windows in log-sigma between sigma-max and sigma-min.")


SOLVER_OPTIONS = {
    "euler": NoOptions,
    "heun": NoOptions,
    "ddpm": DdpmOptions,
    "dpmpp-2m": NoOptions,
    "picard": PicardOptions,
    "collocation": CollocationOptions,
}
