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

from tmiv_assets.ml.automl.estimator import AutoML
from tmiv_assets.ml.forecasting.auto import AutoForecaster
from tmiv_assets.resources.files import spreadsheet_safe
from tmiv_assets.resources.model_registry import EXPERIMENT, ModelRegistry

IN_PROGRESS = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# Listing requirements skips MLflow's inference, which re-imports the model in a subprocess per log.
SERVING_PACKAGES = ("scikit-learn", "lightgbm", "xgboost", "catboost", "pandas", "numpy")


@dg.resource(
    config_schema={
        "home": dg.Field(dg.StringSource, description="State directory (TMIV_HOME)."),
        "experiment_name": dg.Field(str, default_value=EXPERIMENT),
        "database_url": dg.Field(dg.StringSource, default_value="",
                                 description="The PostgreSQL profile's TMIV_DATABASE_URL (empty: SQLite store)."),
    },
    description="dagster-mlflow tracking in the registry's store, artifacts under TMIV_HOME.",
)
def experiment_tracking(init_context: dg.InitResourceContext) -> MlFlow:
    registry = ModelRegistry(home=init_context.resource_config["home"],
                             database_url=init_context.resource_config["database_url"])
    experiment_name = init_context.resource_config["experiment_name"]
    registry.ensure_experiment(experiment_name)  # before dagster-mlflow would create it under ./mlruns
    if init_context.instance is not None:  # a killed run's step never ended its MLflow runs: end them now
        in_progress = init_context.instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS))
        if ended := registry.end_orphaned_runs({r.dagster_run.run_id for r in in_progress}, experiment_name):
            init_context.log.warning(f"marked {len(ended)} MLflow runs of ended Dagster runs KILLED: {ended}")
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
            self.log.info(f"trial {len(self.history)} ({event['family']} #{event['number']}, "
                          f"{event['state'].lower()}), "
                          f"family best {best}, {event['eta_s']:.0f}s left for {event['family']}")


def log_search(tracking: MlFlow, automl: AutoML, serving_models: dict[str, Pipeline], X_example: pd.DataFrame,
               tags: dict[str, str], history: list[dict] = ()) -> pd.DataFrame:
    """Log the search as runs nested in the Dagster run's MLflow run and return the candidates table.

    One run per searched family (its best parameters and CV score) and one per model in `serving_models`
    (the final AutoML model and the baseline) with the model itself (signature on the raw input columns);
    the AutoML run also holds the search history as metrics with steps and every trial as `trials.csv`.
    """
    requirements = [f"{p}=={importlib.metadata.version(p)}" for p in SERVING_PACKAGES]
    metric = automl.metric_
    families = automl.leaderboard().assign(kind="family")
    totals = families[["trials", "skipped", "pruned", "search_seconds"]].sum()
    final = pd.DataFrame([
        {"model": "automl", "kind": "final", f"cv_{metric}_mean": automl.ensemble_score_,
         "fit_seconds": round(automl.fit_seconds_, 3), **totals.to_dict(), "ensemble_weight": 1.0,
         "why_stopped": automl.final_kind_, "params": repr(automl.weights_)},
        {"model": "baseline", "kind": "baseline", "trials": 0, "skipped": 0, "pruned": 0, "search_seconds": 0.0,
         "ensemble_weight": 0.0, "why_stopped": "", "params": "{}"},
    ])
    board = pd.concat([final, families], ignore_index=True).assign(run_id="", model_uri="")
    try:
        for index, row in board.iterrows():
            with mlflow.start_run(run_name=row["model"], nested=True) as run:
                mlflow.set_tags({**tags, "candidate": row["model"], "kind": row["kind"]})
                tracking.log_params({"params": str(row["params"])[:500]})
                mlflow.log_metrics({k: float(v) for k, v in row.items() if k.startswith("cv_") and pd.notna(v)})
                board.loc[index, "run_id"] = run.info.run_id
                if row["model"] == "automl":
                    for step, event in enumerate(history):
                        values = {"trial_value": event["value"], "trial_best": event["best"]}
                        mlflow.log_metrics({k: v for k, v in values.items() if v is not None}, step=step)
                    mlflow.log_text(spreadsheet_safe(automl.trials_).to_csv(index=False), "trials.csv")
                if row["model"] in serving_models:
                    board.loc[index, "model_uri"] = _log_model(serving_models[row["model"]], X_example, requirements)
    except BaseException:
        tracking.cleanup_on_error()
        raise
    tracking.end_run()  # the next step of this Dagster run resumes it by its dagster_run_id tag
    return board


def _log_model(model: Pipeline, X_example: pd.DataFrame, requirements: list[str]) -> str:
    # Integers are declared as doubles: a batch with a missing value must still match.
    as_float = {c: "float64" for c in X_example.select_dtypes("integer").columns}
    signature = infer_signature(X_example.astype(as_float), model.predict(X_example))
    info = mlflow.sklearn.log_model(
        model, name="model", signature=signature, input_example=X_example,
        pip_requirements=requirements, serialization_format="cloudpickle",
    )
    return info.model_uri


def log_forecast(tracking: MlFlow, series: str, auto: AutoForecaster, predicted: pd.DataFrame) -> str:
    """The chosen forecasting model as a run nested in the Dagster run's MLflow run: its settings, every
    candidate's backtest MASE, the calibration, the leaderboard and the forecast; returns the run id."""
    board = auto.leaderboard_
    ok = board[board["status"] == "ok"]
    calibration = auto.calibration_
    try:
        with mlflow.start_run(run_name=f"forecast {series}", nested=True) as run:
            mlflow.set_tags({"series": series, "kind": "forecast", "chosen_model": auto.chosen_})
            tracking.log_params({"chosen_model": auto.chosen_, "members": ",".join(auto.members_),
                                 "horizon": auto.horizon, "season_length": auto.season_length_, "level": auto.level,
                                 "log_transform": auto.log_transform, "regressors": ",".join(auto.regressors_)})
            mlflow.log_metrics({f"backtest_mase_{row.model}": float(row.mase) for row in ok.itertuples()}
                               | {"interval_factor": calibration.factor,
                                  "coverage_before": calibration.coverage_before,
                                  "coverage_after": calibration.coverage_after})
            mlflow.log_text(board.to_csv(index=False), "leaderboard.csv")
            mlflow.log_text(predicted.to_csv(index=False), "forecast.csv")
    except BaseException:
        tracking.cleanup_on_error()
        raise
    tracking.end_run()
    return run.info.run_id
