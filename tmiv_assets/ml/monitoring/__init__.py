"""Monitoring: drift of incoming batches against the training data."""
