"""tmiv_assets: an AutoML and MLOps platform as a Dagster project."""
