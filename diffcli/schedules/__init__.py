"""Sigma grids by name: pure functions returning a descending float64 array of steps + 1 sigmas ending in 0."""

from diffcli.registry import resolve

SCHEDULES = {
    "edm": "diffcli.schedules.edm:get_sigmas_edm",
    "log-snr": "diffcli.schedules.families:get_sigmas_log_snr",
    "vp-leading": "diffcli.schedules.families:get_sigmas_vp_leading",
    "cosine": "diffcli.schedules.families:get_sigmas_cosine",
    "file": "diffcli.schedules.file:get_sigmas_file",
}
