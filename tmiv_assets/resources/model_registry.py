"""The MLflow model registry (SQLite backend under the state directory) and experiment tracking."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT = "tmiv"


class ModelRegistry(dg.ConfigurableResource):
    """Registered models, one per dataset (`tmiv_<dataset>`), with the alias `champion` for serving."""

    home: str

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self._mlflow_dir / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str:
        return (self._mlflow_dir / "artifacts").as_uri()

    @property
    def _mlflow_dir(self) -> Path:
        path = Path(self.home).resolve() / "mlflow"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def client(self) -> MlflowClient:
        # MLflow resolves `models:/` URIs through its global store, not the client's, so set both.
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def ensure_experiment(self, name: str = EXPERIMENT) -> str:
        """Create the experiment with its artifacts under the state directory (MLflow's default is ./mlruns)."""
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=self.artifact_location)

    def end_orphaned_runs(self, live_dagster_runs: set[str], name: str = EXPERIMENT) -> list[str]:
        """Mark KILLED every MLflow run still RUNNING whose Dagster run (its own tag or its parent's) is not in
        `live_dagster_runs`: a killed step never ends its MLflow runs itself. Returns the MLflow run ids."""
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return []
        running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
        dagster_run = {r.info.run_id: r.data.tags.get("dagster_run_id") for r in running}
        orphaned = []
        for run in running:
            owner = dagster_run.get(run.data.tags.get("mlflow.parentRunId"), run.data.tags.get("dagster_run_id"))
            if owner is None:
                parent = run.data.tags.get("mlflow.parentRunId")
                owner = client.get_run(parent).data.tags.get("dagster_run_id") if parent else None
            if owner not in live_dagster_runs:
                client.set_terminated(run.info.run_id, status="KILLED")
                orphaned.append(run.info.run_id)
        return orphaned

    @staticmethod
    def model_name(dataset: str) -> str:
        return f"tmiv_{dataset}"

    def register(self, dataset: str, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
        """Add `model_uri` as a new version of the dataset's model; the champion is not changed."""
        client = self.client()
        name = self.model_name(dataset)
        try:
            client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            client.create_registered_model(name, description=f"Champion models for dataset '{dataset}'")
        return client.create_model_version(name, model_uri, run_id=run_id, tags=tags)

    def promote(self, dataset: str, version: str, alias: str = CHAMPION) -> None:
        """Point `alias` at `version`; an alias names exactly one version, so the swap is atomic."""
        self.client().set_registered_model_alias(self.model_name(dataset), alias, version)

    def champion(self, dataset: str) -> ModelVersion | None:
        """The version aliased `champion`; None before the first one (also when a run was killed between
        registering its version and setting the alias)."""
        client, name = self.client(), self.model_name(dataset)
        try:
            aliases = client.get_registered_model(name).aliases
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            return None
        return client.get_model_version(name, aliases[CHAMPION]) if CHAMPION in aliases else None

    def load_version(self, dataset: str, version: int | str):
        """One version's scikit-learn pipeline (it takes raw dataset columns). Loading by the version a caller
        recorded, not by alias, means a promotion in the meantime cannot swap the model under it."""
        self.client()  # sets the registry URI that `models:/` resolves against
        return mlflow.sklearn.load_model(f"models:/{self.model_name(dataset)}/{version}")

    def load_uri(self, model_uri: str):
        """A logged model (`runs:/...` or `models:/...`) as its scikit-learn pipeline."""
        self.client()  # sets the tracking URI the `runs:/` scheme resolves against
        return mlflow.sklearn.load_model(model_uri)
