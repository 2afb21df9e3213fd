"""Training the reference network: EDM loss, the deterministic loop, checkpoints, the per-sigma loss log."""
