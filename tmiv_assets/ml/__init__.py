"""The engine: plain Python ML code with scikit-learn-style APIs and no Dagster imports."""
