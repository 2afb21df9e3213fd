"""diffcli: fast, accurate diffusion sampling on a JAX core."""

__version__ = "0.1.0"
