"""Training: train state and optimizer, the sharded train step, checkpoints, metric writers (train.py
runs them for the task mmjax.tasks names)."""
