"""Experiment tracking through dagster-mlflow: one MLflow run per Dagster run, candidates nested."""

from __future__ import annotations

import importlib.metadata
import time

import dagster as dg
import mlflow
import pandas as pd
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline

from tmiv_assets.ml.training import CandidateResult
from tmiv_assets.resources.model_registry import EXPERIMENT, ModelRegistry

# Listing requirements skips MLflow's inference, which re-imports the model in a subprocess per log.
SERVING_PACKAGES = ("scikit-learn", "lightgbm", "xgboost", "pandas", "numpy")


@dg.resource(
    config_schema={
        "home": dg.Field(dg.StringSource, description="State directory (TMIV_HOME)."),
        "experiment_name": dg.Field(str, default_value=EXPERIMENT),
    },
    description="dagster-mlflow tracking in the registry's store, artifacts under TMIV_HOME.",
)
def experiment_tracking(init_context: dg.InitResourceContext) -> MlFlow:
    registry = ModelRegistry(home=init_context.resource_config["home"])
    experiment_name = init_context.resource_config["experiment_name"]
    registry.ensure_experiment(experiment_name)  # before dagster-mlflow would create it under ./mlruns
    config = {key: None for key in CONFIG_SCHEMA} | {
        "experiment_name": experiment_name,
        "mlflow_tracking_uri": registry.tracking_uri,
        "env": {"MLFLOW_REGISTRY_URI": registry.tracking_uri},
        "extra_tags": {},
    }
    return MlFlow(init_context.replace_config(config))


class TrainingMonitor:
    """AutoML progress events as throttled `context.log` lines, kept for MLflow metric history."""

    def __init__(self, log, every_s: float = 5.0):
        self.log = log
        self.every_s = every_s
        self.history: list[dict] = []
        self._last = 0.0

    def __call__(self, event: dict) -> None:
        if event.get("event") != "trial":  # phase and epoch events are not search trials
            return
        self.history.append(event)
        if event.get("pruned_reason"):
            self.log.debug(f"{event['family']} trial {event['number']} pruned: {event['pruned_reason']}")
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            best = f"{event['best']:.4f}" if event["best"] is not None else "-"
            self.log.info(f"trial {len(self.history)} ({event['family']} #{event['number']}, {event['state'].lower()}), "
                          f"family best {best}, {event['eta_s']:.0f}s left for {event['family']}")


def log_candidates(
    tracking: MlFlow,
    results: list[CandidateResult],
    serving_models: dict[str, Pipeline],
    X_example: pd.DataFrame,
    tags: dict[str, str],
    history: list[dict] = (),
) -> dict[str, dict[str, str]]:
    """Log each candidate as a nested run of the Dagster run's MLflow run; returns run id and model URI.

    Candidates in `serving_models` are logged with their model (signature on the raw input columns) and
    the search history as metrics with steps (`trial_value`, `trial_best`).
    """
    requirements = [f"{p}=={importlib.metadata.version(p)}" for p in SERVING_PACKAGES]
    logged = {}
    try:
        for result in results:
            with mlflow.start_run(run_name=result.name, nested=True) as run:
                mlflow.set_tags({**tags, "candidate": result.name})
                tracking.log_params({k: str(v)[:500] for k, v in result.params.items()})
                mlflow.log_metrics({**result.metrics, "fit_seconds": result.fit_seconds})
                entry = {"run_id": run.info.run_id, "model_uri": ""}
                if result.name in serving_models:
                    for step, event in enumerate(history):
                        values = {"trial_value": event["value"], "trial_best": event["best"]}
                        mlflow.log_metrics({k: v for k, v in values.items() if v is not None}, step=step)
                    entry["model_uri"] = _log_model(serving_models[result.name], X_example, requirements)
                logged[result.name] = entry
    except BaseException:
        tracking.cleanup_on_error()
        raise
    tracking.end_run()  # the next step of this Dagster run resumes it by its dagster_run_id tag
    return logged


def _log_model(model: Pipeline, X_example: pd.DataFrame, requirements: list[str]) -> str:
    # Integers are declared as doubles: a batch with a missing value must still match.
    as_float = {c: "float64" for c in X_example.select_dtypes("integer").columns}
    signature = infer_signature(X_example.astype(as_float), model.predict(X_example))
    info = mlflow.sklearn.log_model(
        model, name="model", signature=signature, input_example=X_example,
        pip_requirements=requirements, serialization_format="cloudpickle",
    )
    return info.model_uri
