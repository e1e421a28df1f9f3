"""Thin Dagster wrappers around the engine: assets, checks, jobs, sensors, schedules."""
