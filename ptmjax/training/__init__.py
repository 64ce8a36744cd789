"""Losses, optimizer, steps and the training loop."""
