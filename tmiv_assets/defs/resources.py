"""Resource configuration: every path comes from TMIV_HOME (state) and TMIV_DATA_DIR (inputs); with the PostgreSQL
profile (TMIV_DATABASE_URL set) the MLflow store and the Optuna studies live on that server instead."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.databases import check_database_url
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import ModelRegistry
from tmiv_assets.resources.prediction_log import PredictionLog
from tmiv_assets.resources.tracking import experiment_tracking

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = "TMIV_DATABASE_URL"


def default_environment() -> None:
    """Fill in the documented defaults so `dagster dev` works from a bare shell."""
    os.environ.setdefault("TMIV_HOME", str(PROJECT_ROOT / ".tmiv"))
    os.environ.setdefault("TMIV_DATA_DIR", str(PROJECT_ROOT / "data"))


def build_resources(home: str | dg.EnvVar = dg.EnvVar("TMIV_HOME"),
                    data_dir: str | dg.EnvVar = dg.EnvVar("TMIV_DATA_DIR")) -> dict:
    home_config = {"env": "TMIV_HOME"} if isinstance(home, dg.EnvVar) else home
    # An unset EnvVar fails at resource initialisation, so the default profile does not name it at all.
    configured = bool(os.getenv(DATABASE_URL)) and check_database_url(os.environ[DATABASE_URL])
    database = dg.EnvVar(DATABASE_URL) if configured else ""
    database_config = {"env": DATABASE_URL} if database else ""
    return {
        "store": FeatureStore(home=home),
        "registry": ModelRegistry(home=home, database_url=database),
        "artifacts": ArtifactStore(home=home),
        "prediction_log": PredictionLog(home=home),
        "source": DataSource(data_dir=data_dir),
        "mlflow": experiment_tracking.configured({"home": home_config, "database_url": database_config}),
    }
