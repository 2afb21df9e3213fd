"""Sampling: `settings` (which options a run has), `run` (orchestration: index, denoiser, schedule, solver, files)
and `batches` (the batched, jitted loop over samples with per-sample noise)."""
