"""MLflow registration, lineage tags and the champion/challenger gate."""
