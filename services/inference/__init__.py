"""The BentoML service that serves ``models:/<name>@champion``."""
