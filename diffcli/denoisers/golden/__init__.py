"""GoldDiff (Shang et al. 2026, "Fast and Scalable Analytical Diffusion"): a base denoiser restricted to a golden
subset.

Per query and step, three stages over a shared plan (plan.py): the screen (a random pool ranked by proxy distance,
screen.py), the selection (the k_t nearest at full resolution, select.py) and the base's exact softmax over those
k_t rows (posterior.py). The one-device denoiser is denoiser.py, the sharded one diffcli/parallel/golden.py.
Derivations, the certificate and the cost: docs/golddiff.md.
"""

from diffcli.denoisers.golden.denoiser import GoldenDenoiser, build
from diffcli.denoisers.golden.plan import GoldenPlan, GoldenRows, plan_and_rows

__all__ = ["GoldenDenoiser", "GoldenPlan", "GoldenRows", "build", "plan_and_rows"]
