"""The MLflow model registry and experiment tracking: a SQLite store under the state directory, or a PostgreSQL
database beside the Dagster instance's when the deployment profile sets a database URL."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from tmiv_assets.resources.databases import sibling_database
from tmiv_assets.resources.files import process_lock

CHAMPION = "champion"
CHALLENGER = "challenger"
ARCHIVED = "archived"
EXPERIMENT = "tmiv"
DECISION_PREFIX = "decision."


@dataclass(frozen=True)
class Decision:
    """One lifecycle decision: which version was champion before and after, who or what asked, and why."""

    action: str
    """register, promote, challenger, rollback or archive."""
    before: int | None
    after: int | None
    reason: str
    trigger: str
    """new data, drift, performance, schedule or manual."""
    scores: dict
    run_id: str | None = None
    subject: int | None = None
    """The version acted on when it is not the champion after (archive, challenger)."""
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def _decision_order(item: tuple[str, str]) -> int:
    key = item[0]
    return int(key[len(DECISION_PREFIX):]) if key.startswith(DECISION_PREFIX) else 0


class ModelRegistry(dg.ConfigurableResource):
    """Registered models, one per dataset (`tmiv_<dataset>`), with the alias `champion` for serving."""

    home: str
    database_url: str = ""
    """The PostgreSQL profile's TMIV_DATABASE_URL (the Dagster instance's database); MLflow then keeps its store
    in the sibling database `<name>_mlflow` on the same server. Empty: SQLite under `home`."""

    @property
    def tracking_uri(self) -> str:
        if self.database_url:
            return sibling_database(self.database_url, "mlflow")
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
        created = self._mlflow_dir / (".store_created" if not self.database_url else
                                      f".store_created_{hashlib.sha1(self.tracking_uri.encode()).hexdigest()[:12]}")
        if not created.exists():
            # MLflow creates and migrates a new store on first use; the first runs of a fresh state directory
            # doing that at once collide ("duplicate column name"), so one process creates it.
            with process_lock(self._mlflow_dir / ".store_created.lock", "creating the MLflow store"):
                if not created.exists():
                    client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
                    client.search_experiments(max_results=1)
                    client.search_registered_models(max_results=1)
                    created.touch()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def ensure_experiment(self, name: str = EXPERIMENT) -> str:
        """Create the experiment with its artifacts under the state directory (MLflow's default is ./mlruns)."""
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=self.artifact_location)
        except MlflowException as error:  # another run created it meanwhile: use that one
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            return client.get_experiment_by_name(name).experiment_id

    def end_orphaned_runs(self, live_dagster_runs: set[str], name: str = EXPERIMENT) -> list[str]:
        """Mark KILLED every MLflow run still RUNNING whose Dagster run (its own tag or its parent's) is not in
        `live_dagster_runs`: a killed step never ends its MLflow runs itself. Returns the MLflow run ids."""
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return []
        running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
        tagged = {r.info.run_id: r.data.tags.get("dagster_run_id") for r in running}
        orphaned = []
        for run in running:
            owner, parent = run.data.tags.get("dagster_run_id"), run.data.tags.get("mlflow.parentRunId")
            if owner is None and parent:  # a nested candidate run: its parent carries the Dagster run id
                owner = tagged[parent] if parent in tagged else client.get_run(parent).data.tags.get("dagster_run_id")
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

    def promote(self, dataset: str, version: int | str, alias: str = CHAMPION, *, reason: str = "",
                trigger: str = "manual", action: str = "promote", scores: dict | None = None,
                run_id: str | None = None) -> Decision:
        """Point `alias` at `version` and record the decision. Moving an alias is one atomic write, so a
        failure at any point leaves exactly one champion: the old one, or the new one."""
        client, name = self.client(), self.model_name(dataset)
        target = self.version(dataset, version)
        if alias == CHAMPION and target.tags.get(ARCHIVED) == "true":
            raise ValueError(f"{name} v{version} is archived; a champion must be a live version (unarchive it by "
                             f"removing its '{ARCHIVED}' tag, or pick another version)")
        before = self.champion(dataset)
        before_version = int(before.version) if before else None
        client.set_registered_model_alias(name, alias, str(target.version))
        return self._record(dataset, Decision(
            action=action if alias == CHAMPION else alias, before=before_version,
            after=int(target.version) if alias == CHAMPION else before_version, reason=reason, trigger=trigger,
            scores=scores or {}, run_id=run_id, subject=int(target.version)))

    def archive(self, dataset: str, version: int | str, *, reason: str = "", trigger: str = "manual",
                run_id: str | None = None) -> Decision:
        """Tag a version archived and drop the `challenger` alias from it; the champion cannot be archived."""
        client, name = self.client(), self.model_name(dataset)
        target = self.version(dataset, version)
        if CHAMPION in target.aliases:
            raise ValueError(f"{name} v{version} is the champion; promote or roll back to another version first")
        client.set_model_version_tag(name, str(target.version), ARCHIVED, "true")
        if CHALLENGER in target.aliases:
            client.delete_registered_model_alias(name, CHALLENGER)
        champion = self.champion(dataset)
        return self._record(dataset, Decision(
            action="archive", before=int(champion.version) if champion else None,
            after=int(champion.version) if champion else None, reason=reason or f"archived v{target.version}",
            trigger=trigger, scores={}, run_id=run_id, subject=int(target.version)))

    def rollback(self, dataset: str, to_version: int | str | None = None, *, reason: str = "",
                 trigger: str = "manual", run_id: str | None = None) -> Decision:
        """Make `to_version` champion again; by default the champion before the current one."""
        self._registered(dataset)
        champion = self.champion(dataset)
        if champion is None:
            raise LookupError(f"{self.model_name(dataset)} has no champion to roll back from; materialize "
                              f"registered_model for '{dataset}' first")
        if to_version is None:
            earlier = [d for d in self.history(dataset) if d.after == int(champion.version)
                       and d.action in ("promote", "rollback", "register") and d.before not in (None, d.after)]
            if not earlier:
                raise LookupError(f"{self.model_name(dataset)} v{champion.version} has no earlier champion to roll "
                                  "back to; name a version with to_version")
            to_version = earlier[-1].before
        return self.promote(dataset, to_version, action="rollback", trigger=trigger, run_id=run_id,
                            reason=reason or f"rolled back from v{champion.version}")

    def keep(self, dataset: str, *, reason: str, trigger: str = "manual", scores: dict | None = None,
             run_id: str | None = None) -> Decision:
        """Record a decision to keep the champion (e.g. an A/B test without a better challenger)."""
        champion = self.champion(dataset)
        version = int(champion.version) if champion else None
        return self._record(dataset, Decision(action="keep", before=version, after=version, reason=reason,
                                              trigger=trigger, scores=scores or {}, run_id=run_id))

    def history(self, dataset: str) -> list[Decision]:
        """Every recorded lifecycle decision of the dataset's model, oldest first."""
        model = self._registered(dataset)
        return [Decision(**json.loads(value)) for key, value in sorted(model.tags.items(), key=_decision_order)
                if key.startswith(DECISION_PREFIX)]

    def _record(self, dataset: str, decision: Decision) -> Decision:
        """A decision as a registered-model tag (MLflow keeps them with the model; no side file)."""
        key = f"{DECISION_PREFIX}{time.time_ns()}"
        self.client().set_registered_model_tag(self.model_name(dataset), key, json.dumps(asdict(decision)))
        return decision

    def _registered(self, dataset: str):
        try:
            return self.client().get_registered_model(self.model_name(dataset))
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            raise LookupError(f"no registered model {self.model_name(dataset)}: unknown dataset '{dataset}' or never "
                              f"trained; materialize registered_model for it first") from error

    def versions(self, dataset: str) -> list[ModelVersion]:
        """Every registered version of the dataset's model."""
        self._registered(dataset)
        client, name = self.client(), self.model_name(dataset)
        # Search results leave out aliases; one lookup per version fills them in.
        return [client.get_model_version(name, v.version) for v in client.search_model_versions(f"name = '{name}'")]

    def version(self, dataset: str, version: int | str) -> ModelVersion:
        """One registered version; a LookupError naming the versions that exist when it does not."""
        self._registered(dataset)
        try:
            return self.client().get_model_version(self.model_name(dataset), str(int(version)))
        except (MlflowException, ValueError) as error:
            versions = sorted(int(v.version) for v in self.client().search_model_versions(
                f"name = '{self.model_name(dataset)}'"))
            raise LookupError(f"{self.model_name(dataset)} has no version {version!r}; versions: {versions}") from error

    def tag(self, dataset: str, version: int | str, key: str, value: str) -> None:
        """Set one tag of a registered version (what an explanation found out about it, for the next asset)."""
        self.client().set_model_version_tag(self.model_name(dataset), str(int(version)), key, value)

    def champion(self, dataset: str) -> ModelVersion | None:
        """The version aliased `champion`; None before the first one (also when a run was killed between
        registering its version and setting the alias)."""
        return self.aliased(dataset, CHAMPION)

    def aliased(self, dataset: str, alias: str) -> ModelVersion | None:
        """The version an alias points at, or None."""
        client, name = self.client(), self.model_name(dataset)
        try:
            aliases = client.get_registered_model(name).aliases
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            return None
        return client.get_model_version(name, aliases[alias]) if alias in aliases else None

    def load_version(self, dataset: str, version: int | str):
        """One version's scikit-learn pipeline (it takes raw dataset columns). Loading by the version a caller
        recorded, not by alias, means a promotion in the meantime cannot swap the model under it."""
        self.client()  # sets the registry URI that `models:/` resolves against
        return mlflow.sklearn.load_model(f"models:/{self.model_name(dataset)}/{version}")

    def load_uri(self, model_uri: str):
        """A logged model (`runs:/...` or `models:/...`) as its scikit-learn pipeline."""
        self.client()  # sets the tracking URI the `runs:/` scheme resolves against
        return mlflow.sklearn.load_model(model_uri)
