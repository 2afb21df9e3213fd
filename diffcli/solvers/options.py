"""Each solver's own options (flag, default, help, check); `sample_<name>(..., **options)` reads them from here.

The defaults are the configuration benchmarks/bench_solvers.py measured best. This module imports no JAX, so the
command line can list every flag cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from diffcli.errors import UsageError
from diffcli.options import NoOptions, Options, flag_name, option


@dataclass(frozen=True)
class DdpmOptions(Options):
    eta: float = option(1.0, help="1 = ancestral DDPM, 0 = DDIM (deterministic).", minimum=0.0,
                        maximum=1.0)


PICARD_TOL = 1e-3  # --picard-rule window: final relative distance to the sequential sample
PICARD_PARADIGMS_TOL = 0.1  # --picard-rule paradigms: ParaDiGMS's own default tolerance
PICARD_WINDOW_FRACTION = 2  # --picard-rule window: W = ceil(steps / 2) points per round
PICARD_BLOCK = 32  # --picard-rule blocks: steps per block when neither --picard-blocks nor --picard-window is given
COLLOC_TOL = 1e-4  # collocation: final relative distance to the exact PF-ODE solution
COLLOC_NODES = 12  # collocation: Chebyshev nodes per window
COLLOC_MAX_ROUNDS = 64  # collocation: round cap per window when the tolerance stops the rounds


@dataclass(frozen=True)
class PicardOptions(Options):
    """Picard defaults (measured best in benchmarks/bench_picard.py): a sliding window over half the grid,
    quasi-Newton rounds, and a tolerance of 1e-3 on the final relative distance to the sequential sample."""

    picard_mode: str = option("sde", help="The sequential sampler Picard converges to: sde (ddpm) or ode (euler).",
                              choices=("sde", "ode"))
    picard_rule: str | None = option(
        None, kind=str, choices=("window", "blocks", "paradigms"),
        help="window: diffcli's sliding window with a final-error tolerance; blocks: fixed rounds per block (PIADM); "
             "paradigms: ParaDiGMS's own iteration. Default: blocks when --picard-blocks or --picard-iters is given, "
             "else window.")
    picard_tol: float | None = option(
        None, kind=float, positive=True,
        help=f"Window rule: the final relative distance to the sequential sample, ||x - x_seq|| / ||x_seq|| per "
             f"sample (default {PICARD_TOL:g}); paradigms rule: ParaDiGMS's tolerance on ||dx||^2 / (dim var) "
             f"(default {PICARD_PARADIGMS_TOL:g}).")
    picard_window: int | None = option(
        None, kind=int, minimum=1,
        help=f"Points refined per round (default: window and paradigms rules ceil(steps / {PICARD_WINDOW_FRACTION}), "
             f"blocks rule {PICARD_BLOCK}).")
    picard_blocks: int | None = option(None, kind=int, minimum=1,
                                       help="Blocks rule: split the grid into this many blocks.")
    picard_iters: int | None = option(None, kind=int, minimum=1,
                                      help="Blocks rule: rounds per block (default ceil(log(d / 1e-4))).")
    picard_newton: bool | None = option(
        None, kind=bool, help="Quasi-Newton rounds (secant slope of D): the fewest rounds (default on; window and "
                              "blocks rules).")
    picard_anderson: int = option(0, minimum=0, help="Anderson memory M (0 = off); --picard-newton needs fewer rounds.")

    def __post_init__(self):
        super().__post_init__()
        rule = self.rule()
        if rule in ("window", "paradigms"):
            given = [name for name in ("picard_blocks", "picard_iters") if getattr(self, name) is not None]
            if given:
                raise UsageError(f"{flag_name(given[0])} belongs to --picard-rule blocks; drop it or choose that rule.")
        elif self.picard_tol is not None:
            raise UsageError("--picard-tol belongs to the window and paradigms rules (blocks run fixed rounds).")
        if rule == "paradigms" and (self.picard_newton or self.picard_anderson):
            raise UsageError("--picard-rule paradigms runs ParaDiGMS's plain rounds; drop --picard-newton and "
                             "--picard-anderson.")
        if self.picard_blocks is not None and self.picard_window is not None:
            raise UsageError("--picard-blocks and --picard-window both size the blocks; give one of them.")

    def rule(self) -> str:
        if self.picard_rule is not None:
            return self.picard_rule
        return "blocks" if self.picard_blocks is not None or self.picard_iters is not None else "window"

    def newton(self) -> bool:
        """Quasi-Newton rounds: on unless turned off, never for the paradigms rule."""
        if self.picard_newton is not None:
            return self.picard_newton
        return self.rule() != "paradigms"

    def tolerance(self) -> float:
        if self.picard_tol is not None:
            return self.picard_tol
        return PICARD_PARADIGMS_TOL if self.rule() == "paradigms" else PICARD_TOL

    def window_size(self, steps: int) -> int:
        """Points per round on a grid of `steps` steps."""
        if self.picard_window is not None:
            return min(self.picard_window, steps)
        if self.picard_blocks is not None:
            return -(-steps // min(self.picard_blocks, steps))
        if self.rule() == "blocks":
            return min(steps, PICARD_BLOCK)
        return -(-steps // PICARD_WINDOW_FRACTION)


@dataclass(frozen=True)
class CollocationOptions(Options):
    """Collocation defaults (measured best in benchmarks/bench_solvers.py): the exponential-integrator form, windows
    sized adaptively from the tolerance, each window's rounds warm-started from the last window's polynomial and
    stopped when the window's change is within the tolerance's share."""

    # first window's length in log-sigma: RHO (tol / 2)^(1 / nodes), a spectral-error guess (docs/collocation.md)
    RHO: ClassVar[float] = 4.5
    colloc_form: str = option("ei", choices=("ei", "plain"),
                              help="ei: the linear part of the drift integrated exactly, only D collocated; plain: "
                                   "the whole drift x - D collocated.")
    colloc_nodes: int = option(COLLOC_NODES, minimum=1, help="Chebyshev nodes per window.")
    colloc_tol: float | None = option(
        None, kind=float, positive=True,
        help=f"The final relative distance to the exact PF-ODE solution it aims at: sizes the windows and stops each "
             f"window's rounds (default {COLLOC_TOL:g}).")
    colloc_windows: int | None = option(None, kind=int, minimum=1,
                                        help="Equal windows in log-sigma between sigma-max and sigma-min (default: "
                                             "adaptive windows from the tolerance).")
    colloc_iters: int | None = option(None, kind=int, minimum=1,
                                      help=f"Rounds per window: fixed when --colloc-tol is not given, else a cap "
                                           f"(default {COLLOC_MAX_ROUNDS}).")
    colloc_warm: bool = option(True, help="Start each window's rounds from the previous window's polynomial, "
                                          "extrapolated (else from the window's start state).")

    def tolerance(self) -> float:
        return COLLOC_TOL if self.colloc_tol is None else self.colloc_tol

    def round_tolerance(self) -> float | None:
        """The stopping tolerance of a window's rounds, or None for fixed rounds (--colloc-iters alone)."""
        if self.colloc_tol is None and self.colloc_iters is not None:
            return None
        return self.tolerance()

    def adaptive(self) -> bool:
        """Window lengths from the error estimate unless --colloc-windows fixes equal windows."""
        return self.colloc_windows is None

    def max_rounds(self) -> int:
        if self.colloc_iters is not None:
            return self.colloc_iters
        return self.colloc_nodes if self.round_tolerance() is None else COLLOC_MAX_ROUNDS

    def window_length(self) -> float:
        """The first window's length in log-sigma: the spectral error (h / RHO)^nodes at half the tolerance."""
        return self.RHO * (0.5 * self.tolerance()) ** (1.0 / self.colloc_nodes)


SOLVER_OPTIONS = {
    "euler": NoOptions,
    "heun": NoOptions,
    "ddpm": DdpmOptions,
    "dpmpp-2m": NoOptions,
    "dpmpp-3m": NoOptions,
    "unipc": NoOptions,
    "picard": PicardOptions,
    "collocation": CollocationOptions,
}
