"""Training: optimiser and schedule, early stopping, checkpoints, the epoch loop and a whole run."""
