"""Post-evaluation: augmentation, labels, losses, schedules and the training engine."""
