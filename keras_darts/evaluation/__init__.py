"""Training a found architecture: the evaluation networks and their training step."""
