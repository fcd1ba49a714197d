"""Hyperparameter search: Ray Tune over Ray Train trials."""
