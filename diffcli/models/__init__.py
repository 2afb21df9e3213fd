"""Trainable reference networks: a small U-Net (images), a residual MLP (vectors), EDM preconditioning, model files."""
