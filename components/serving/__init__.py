"""Deployment of the champion as a BentoML endpoint."""
