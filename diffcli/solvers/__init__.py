"""Solvers by name. Each is `sample_<name>(denoiser, x_T, sigmas, *, key, **options) -> SampleResult`."""

from diffcli.registry import resolve

SOLVERS = {
    "euler": "diffcli.solvers.euler:sample_euler",
    "heun": "diffcli.solvers.heun:sample_heun",
    "ddpm": "diffcli.solvers.ddpm:sample_ddpm",
    "dpmpp-2m": "diffcli.solvers.dpmpp:sample_dpmpp_2m",
    "dpmpp-3m": "diffcli.solvers.dpmpp:sample_dpmpp_3m",
    "unipc": "diffcli.solvers.unipc:sample_unipc",
    "picard": "diffcli.solvers.picard:sample_picard",
    "collocation": "diffcli.solvers.collocation:sample_collocation",
}


def get_solver(name: str):
    return resolve("solver", SOLVERS, name)
