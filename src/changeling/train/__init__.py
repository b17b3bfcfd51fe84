"""Training: face data, on-device augmentation, losses, checkpoints, previews, logs and the trainer loop."""
