"""Each schedule's own options (flag, default, help, check). A schedule file brings its own sigmas and takes none."""

from __future__ import annotations

from dataclasses import dataclass

from diffcli.noise import SIGMA_MAX, SIGMA_MIN
from diffcli.options import NoOptions, Options, option


def sigma_min_option():
    return option(SIGMA_MIN, positive=True, help="Smallest nonzero sigma of the schedule.")


def sigma_max_option():
    return option(SIGMA_MAX, positive=True, help="Largest sigma of the schedule (the initial noise level).")


@dataclass(frozen=True)
class SigmaRange(Options):
    sigma_min: float = sigma_min_option()
    sigma_max: float = sigma_max_option()

    def __post_init__(self):
        super().__post_init__()
        if not self.sigma_min < self.sigma_max:
            from diffcli.errors import UsageError

            raise UsageError(f"--sigma-min ({self.sigma_min}) must lie below --sigma-max ({self.sigma_max}).")


@dataclass(frozen=True)
class EdmOptions(SigmaRange):
    rho: float = option(7.0, positive=True, help="edm: the schedule's exponent rho (Karras et al. 2022).")


SCHEDULE_OPTIONS = {
    "edm": EdmOptions,
    "log-snr": SigmaRange,
    "cosine": SigmaRange,
    "vp-leading": NoOptions,  # the DDPM's own timesteps fix the range
    "file": NoOptions,  # a fitted schedule file brings its own sigmas
}
