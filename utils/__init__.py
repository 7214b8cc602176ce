"""Shared utilities: metrics, options, the training engine, experiment folders, plots."""
