"""The model and its training: layouts, losses, augmentation, the dataset, the loop, checkpoints."""
