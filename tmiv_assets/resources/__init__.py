"""Dagster resources: the platform's outside world (files, feature store, MLflow)."""
