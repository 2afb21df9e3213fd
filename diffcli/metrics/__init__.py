"""Evaluation metrics: fidelity to a reference run, memorisation, feature-space and distribution distances."""
