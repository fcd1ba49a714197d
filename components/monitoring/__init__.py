"""Drift: Evidently reports of current data against the training reference."""
