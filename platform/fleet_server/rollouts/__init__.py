"""Rollouts: deploying a model package to chosen devices and following each device's progress."""
