"""Settings, errors and I/O shared by every stage."""
