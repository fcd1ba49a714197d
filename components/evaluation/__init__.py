"""Holdout metrics and plots."""
