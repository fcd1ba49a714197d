"""Training: the plain-torch step loop, the model, and its Ray Train wrapper."""
