"""Data preparation: specs, ingest, quality checks, cleaning, profiles and splits."""
