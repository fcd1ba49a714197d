"""Data preparation: read sources, validate, clean, integrate, split, featurize."""
