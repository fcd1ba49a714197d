"""Long-running processes: the inference service and the drift monitor."""
