"""The training engine: configs and recipes, the training loop, checkpoints, distributed set-up."""
