"""AutoML: the search over the model catalog and the leaderboard on held-out rows."""

from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pandas as pd
from dagster_mlflow.resources import MlFlow
from mlflow.entities.model_registry import ModelVersion
from pydantic import Field

from tmiv_assets.defs.assets.data import labelled_batch_days
from tmiv_assets.defs.metadata import engine_errors_as_failure, figures_markdown, markdown_table
from tmiv_assets.defs.partitions import dataset_partitions
from tmiv_assets.ml.automl.estimator import AutoML
from tmiv_assets.ml.automl.evaluation import evaluation_plots, fit_baseline
from tmiv_assets.ml.automl.tuning import COSTS, make_storage, study_plots
from tmiv_assets.ml.data.spec import DatasetSpec
from tmiv_assets.ml.data.splits import TrainTestSplit, split_dataset
from tmiv_assets.ml.deploy.serving import serving_pipeline
from tmiv_assets.ml.features.builder import FeatureBuilder
from tmiv_assets.ml.metrics import is_better, score_model
from tmiv_assets.ml.plots import figure_to_markdown, pareto_plot
from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.databases import sibling_database
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import ModelRegistry
from tmiv_assets.resources.tracking import TrainingMonitor, log_search

AUTO_BUDGET_BASE_S, AUTO_BUDGET_CELLS_PER_S, AUTO_BUDGET_MAX_S = 10.0, 40_000, 120.0

Metric = Literal["auto", "roc_auc", "log_loss", "accuracy", "f1_macro", "rmse", "mae", "r2", "mape"]


class TrainingConfig(dg.Config):
    test_size: float = Field(default=0.2, gt=0, lt=1, description="Share of rows held out for the test set "
                                                                 "(the latest rows when the spec has a time column).")
    seed: int = Field(default=0, description="Seed of the split, the search and every model.")
    time_budget_s: float = Field(default=0, ge=0, description=(
        "Wall-clock budget of the AutoML search and final model; 0: sized to the training rows (10 s + 1 s per "
        "40,000 cells of rows x columns, at most 120 s)."))
    preset: Literal["fast", "balanced", "best_quality"] = Field(default="balanced", description="Families and depth.")
    metric: Metric = Field(default="auto", description="Optimised metric; auto: roc_auc / f1_macro / rmse by task.")
    sampler: Literal["tpe", "gp", "nsga2", "random", "grid"] = Field(
        default="tpe", description="tpe (median pruning) | gp (Bayesian) | nsga2 (genetic) | random | grid")
    ensemble: Literal["caruana", "voting", "stacking", "blending", "bagging", "best"] = Field(
        default="caruana", description="Final model: Caruana selection, voting, stacking, blending, bagging or best.")
    scaler: Literal["standard", "minmax", "robust", "none"] = Field(default="standard",
                                                                    description="Scaling of numeric columns.")
    cv_folds: int = Field(default=0, ge=0, description="Cross-validation folds (0: the preset's; 2 at least).")
    include: list[str] = Field(default=[], description="Only these model families (empty: the preset's).")
    exclude: list[str] = Field(default=[], description="Model families to leave out.")
    max_trials: int = Field(default=0, ge=0, description="Trials per family at most (0: as the budget allows); "
                                                         "set it for bit-for-bit reproducible searches.")
    n_jobs: int = Field(default=2, description="Threads per model fit.")
    pinned_params: dict[str, dict[str, Any]] = Field(
        default={}, description="Fixed hyperparameters per family, e.g. {mlp: {max_epochs: 30, patience: 5}}.")
    nsga2_population_size: int = Field(default=20, ge=2, description="NSGA-II population size.")
    nsga2_crossover_prob: float = Field(default=0.9, ge=0, le=1, description="NSGA-II crossover probability.")
    nsga2_mutation_prob: float | None = Field(default=None,
                                              description="NSGA-II mutation probability (None: 1/params).")
    study_storage: str = Field(default="", description="Optuna RDB URL or journal file shared by processes "
                                                       "(empty: in memory, or per run for several workers).")
    search_workers: int = Field(default=1, ge=1, description="Parallel search steps sharing one Optuna study "
                                                             "(each runs trials; one more step assembles).")
    tensorboard: bool = Field(default=False, description="Write TensorBoard logs of the refitted networks.")
    secondary_objective: Literal["none", "latency", "size"] = Field(
        default="none", description="Trade the score against prediction latency or model size (multi-objective; "
                                    "sampler nsga2 is the genetic search); the final model is one Pareto trial.")
    pareto_tolerance: float = Field(default=0.0, ge=0, le=1, description="Pick the cheapest Pareto trial whose CV "
                                                                         "score is within this fraction of the best.")
    target_encoding: Literal["auto", "keep", "drop"] = Field(
        default="auto", description="Target-encode pooled categorical columns too: auto (where a holdout of the "
                                    "training rows says it pays), keep or drop.")

    def budget_for(self, rows: int, columns: int) -> float:
        """The configured budget, or one sized to the data: a few hundred rows get the searches they need in
        10 s, and each further 40,000 cells (a 20,000-row, 19-column set: about 20 s) adds a second."""
        if self.time_budget_s:
            return self.time_budget_s
        return min(AUTO_BUDGET_MAX_S, AUTO_BUDGET_BASE_S + rows * columns / AUTO_BUDGET_CELLS_PER_S)

    def automl(self, task: str, shape: tuple[int, int], progress, study_prefix: str, log_dir: str | None) -> AutoML:
        nsga2 = {"population_size": self.nsga2_population_size, "crossover_prob": self.nsga2_crossover_prob,
                 "mutation_prob": self.nsga2_mutation_prob}
        return AutoML(task=task, metric=None if self.metric == "auto" else self.metric,
                      time_budget_s=self.budget_for(*shape), seed=self.seed, n_jobs=self.n_jobs, preset=self.preset,
                      sampler=self.sampler, ensemble=self.ensemble,
                      sampler_options=nsga2 if self.sampler == "nsga2" else None, scaler=self.scaler,
                      n_folds=self.cv_folds or None, include=self.include or None, exclude=self.exclude or None,
                      max_trials=self.max_trials or None, pinned_params=self.pinned_params,
                      storage=self.study_storage or None, progress=progress, study_prefix=study_prefix,
                      log_dir=log_dir if self.tensorboard else None, pareto_tolerance=self.pareto_tolerance,
                      secondary_objective=None if self.secondary_objective == "none" else self.secondary_objective,
                      target_encoding=self.target_encoding)


def held_out(store: FeatureStore, dataset: str, lineage: dict) -> tuple[DatasetSpec, pd.DataFrame, TrainTestSplit]:
    """The spec, clean rows and train/test split a model was trained on, rebuilt from its lineage, so the
    leaderboard and the champion comparison use exactly the rows the search held out."""
    spec = DatasetSpec.from_record(lineage["spec"])
    features = store.load("feature_set", dataset, lineage["feature_set_version"])
    clean = store.load("clean_dataset", dataset, lineage["clean_dataset_version"])
    ids = clean[spec.id_column] if spec.id_column else None
    split = split_dataset(features, spec.target, spec.task, lineage["test_size"], lineage["seed"], ids=ids,
                          times=clean[spec.time_column] if spec.time_column else None,
                          batch_days=labelled_batch_days(store, dataset, lineage["clean_dataset_version"], ids)
                          if ids is not None else None)
    return spec, clean, split


def version_split(store: FeatureStore, version: ModelVersion) -> tuple[DatasetSpec, pd.DataFrame, TrainTestSplit]:
    """`held_out` for a registered version: the spec, clean rows and split it was trained and tested on."""
    return held_out(store, version.tags["dataset"], store.lineage(
        "model_leaderboard", version.tags["dataset"], int(version.tags["leaderboard_version"])))


def training_sample(held: tuple[DatasetSpec, pd.DataFrame, TrainTestSplit], size: int) -> pd.DataFrame:
    """Input columns of up to `size` rows a version was trained on (of `version_split`): the explainers'
    reference, against which a row's values say what moved it."""
    spec, clean, split = held
    rows = clean.loc[split.X_train.index].drop(columns=[spec.target])
    return rows.sample(min(size, len(rows)), random_state=0)


def search_storage(config: TrainingConfig, registry: ModelRegistry, dataset: str, run_id: str) -> tuple:
    """Where the search's Optuna studies live and their name prefix. One worker: in memory (or the configured
    storage). Several: the configured storage, else the PostgreSQL profile's `<db>_optuna` database, else a
    journal file under TMIV_HOME; per run, so workers share this run's studies and no earlier run's."""
    if config.study_storage:
        return config.study_storage, dataset
    if config.search_workers == 1:
        return None, dataset
    if registry.database_url:
        return sibling_database(registry.database_url, "optuna"), f"{dataset}-{run_id}"
    return str(Path(registry.home).resolve() / "optuna" / f"{run_id}.log"), f"{dataset}-{run_id}"


def search_run_id(context: dg.OpExecutionContext) -> str:
    """The run whose studies a step searches: a re-execution's workers continue the original run's studies,
    which keep every trial the failed run finished."""
    return context.dagster_run.root_run_id or context.run_id


def search_engine(context: dg.OpExecutionContext, config: TrainingConfig, registry: ModelRegistry,
                  artifacts: ArtifactStore, task: str, shape: tuple[int, int], lineage: dict, progress=None) -> AutoML:
    """The run's AutoML, encoding as `plan_search` decided for every worker."""
    name = context.partition_key
    storage, prefix = search_storage(config, registry, name, search_run_id(context))
    automl = config.automl(task, shape, progress, prefix, str(artifacts.path("tensorboard", name, context.run_id)))
    return automl.set_params(storage=storage, target_encoding=lineage["target_encoding"])


@dg.op(ins={"feature_set": dg.In(dg.Nothing)},
       out={"workers": dg.DynamicOut(int), "lineage": dg.Out(dict)})
def plan_search(context: dg.OpExecutionContext, config: TrainingConfig, store: FeatureStore,
                registry: ModelRegistry):
    """Pins the feature-set version every worker trains on and whether they target-encode pooled categories
    (decided once on a holdout of the training rows: workers must encode alike), creates the shared study
    storage (its schema once, not raced by the workers), then fans out `search_workers` search steps."""
    make_storage(search_storage(config, registry, context.partition_key, search_run_id(context))[0])
    name, version = context.partition_key, store.latest("feature_set", context.partition_key).version
    source = store.lineage("feature_set", name, version)
    lineage = {"feature_set_version": version, "clean_dataset_version": source["clean_dataset_version"],
               "spec": source["spec"], "builder": source["builder"], "test_size": config.test_size,
               "seed": config.seed}
    spec, _, split = held_out(store, name, lineage)
    automl = config.automl(spec.task, split.X_train.shape, None, name, None)
    with engine_errors_as_failure(name, "AutoML could not check its encoding"):
        lineage["target_encoding"] = automl.target_encoding_for(split.X_train, split.y_train, split.times_train)
    context.log.info(f"target encodings of pooled categories: {lineage['target_encoding']}")
    yield dg.Output(lineage, "lineage")
    for worker in range(config.search_workers):
        yield dg.DynamicOutput(worker, mapping_key=str(worker), output_name="workers")


@dg.op(tags={"dagster/concurrency_key": "search_workers"})
def search_worker(context: dg.OpExecutionContext, config: TrainingConfig, store: FeatureStore,
                  registry: ModelRegistry, artifacts: ArtifactStore, worker: int, lineage: dict) -> dict:
    """One worker's share of the AutoML search, its trials in the run's shared Optuna studies."""
    spec, _, split = held_out(store, context.partition_key, lineage)
    monitor = TrainingMonitor(context.log)
    automl = search_engine(context, config, registry, artifacts, spec.task, split.X_train.shape, lineage, monitor)
    with engine_errors_as_failure(context.partition_key, "AutoML could not train"):
        outcome = automl.search_worker(split.X_train, split.y_train, times=split.times_train, worker=worker,
                                       workers=config.search_workers)
    context.log.info(f"search worker {worker + 1}/{config.search_workers}: {outcome.seconds:.1f}s, best "
                     + ", ".join(f"{r.family.name} {r.cv_mean:.4f}" for r in outcome.results))
    return {"outcome": outcome, "history": monitor.history}


@dg.op(out=dg.Out(dg.Nothing))
def assemble_candidates(context: dg.OpExecutionContext, config: TrainingConfig, store: FeatureStore,
                        artifacts: ArtifactStore, registry: ModelRegistry, mlflow: dg.ResourceParam[MlFlow],
                        lineage: dict, searches: list[dict]) -> None:
    """The final model from every worker's best trials (ensemble, refit), the no-skill baseline and each
    family's best as MLflow runs nested in the Dagster run's run; the table as a versioned frame."""
    name = context.partition_key
    spec, clean, split = held_out(store, name, lineage)
    automl = search_engine(context, config, registry, artifacts, spec.task, split.X_train.shape, lineage)
    with engine_errors_as_failure(name, "AutoML could not train"):
        automl.fit_from(split.X_train, split.y_train, [s["outcome"] for s in searches], times=split.times_train)
    raw = clean.drop(columns=[spec.target])
    builder = FeatureBuilder(**lineage["builder"]).fit(raw)
    serving = {"automl": serving_pipeline(builder, automl.best_pipeline_),
               "baseline": serving_pipeline(builder, fit_baseline(split.X_train, split.y_train, spec.task))}
    tags = {"dataset": name, "feature_set_version": str(lineage["feature_set_version"]), "task": spec.task,
            "clean_dataset_version": str(lineage["clean_dataset_version"])}
    history = [event for s in searches for event in s["history"]]
    board = log_search(mlflow, automl, serving, raw.head(5), tags, history)
    stored = store.save("model_candidates", name, board, lineage | {"metric": automl.metric_})
    best_family = automl.leaderboard_["model"].iloc[0]
    context.log.info(f"AutoML for {name}: {len(automl.trials_)} trials over {len(searches)} search workers, "
                     f"final {automl.weights_}, CV {automl.metric_}={automl.ensemble_score_:.4f}")
    context.add_output_metadata({
        "leaderboard": markdown_table(board.drop(columns=["run_id", "model_uri", "params"])),
        f"cv_{automl.metric_}": float(automl.ensemble_score_),
        "trials": len(automl.trials_),
        "pruned_trials": int((automl.trials_["state"] == "PRUNED").sum()),
        "search_workers": len(searches),
        "trial_table": markdown_table(automl.trials_.tail(30)),
        "time_budget_s": round(automl.time_budget_s, 1),
        "search_seconds": round(automl.fit_seconds_, 1),
        "seconds_by_phase": {phase: round(seconds, 1) for phase, seconds in automl.timings_.items()},
        "validation": f"{automl.cv_strategy_} validation, {split.strategy} test split; final model: "
                      f"{automl.final_kind_}",
        "target_encoding": automl.target_encoding_,
        **({"decision": automl.decision_} if automl.decision_ else {}),
        "train_rows": len(split.X_train),
        "search_plots": dg.MetadataValue.md(figures_markdown(
            {f"{best_family}_{k}": v for k, v in study_plots(automl.studies_[best_family]).items()})),
        "candidates_version": stored.version,
        **pareto_metadata(automl),
    })


def _search_config(values: dict) -> dict:
    return {op: {"config": values} for op in ("plan_search", "search_worker", "assemble_candidates")}


@dg.graph_asset(partitions_def=dataset_partitions, ins={"feature_set": dg.AssetIn(dagster_type=dg.Nothing)},
                group_name="models", kinds={"mlflow", "optuna", "scikitlearn"},
                config=dg.ConfigMapping(config_fn=_search_config, config_schema=TrainingConfig.to_config_schema()))
def model_candidates(feature_set):
    """AutoML over the model catalog (Optuna, CV on the training rows), split over `search_workers` parallel
    steps that share one study, then assembled: the final model, the no-skill baseline and each family's best
    as MLflow runs, the candidates table as a versioned frame."""
    workers, lineage = plan_search(feature_set)
    return assemble_candidates(lineage, workers.map(lambda worker: search_worker(worker, lineage)).collect())


def pareto_metadata(automl: AutoML) -> dict:
    """The Pareto front of a multi-objective search as a table and a plot; nothing for a single objective."""
    if not automl.secondary_objective:
        return {}
    cost = COSTS[automl.secondary_objective]
    plot = pareto_plot(automl.trials_, automl.pareto_front_, cost, automl.metric_)
    return {"pareto_front": markdown_table(automl.pareto_front_),
            "pareto_plot": dg.MetadataValue.md(figure_to_markdown(plot, "Pareto front"))}


@dg.asset(partitions_def=dataset_partitions, deps=[model_candidates], group_name="models",
          kinds={"mlflow", "scikitlearn"},
          check_specs=[dg.AssetCheckSpec("beats_baseline", asset="model_leaderboard", blocking=True,
                                         description="The AutoML model beats the no-skill baseline on the test rows.")])
def model_leaderboard(context: dg.AssetExecutionContext, store: FeatureStore,
                      registry: ModelRegistry) -> dg.MaterializeResult:
    """The candidates scored on the held-out test rows, with ROC / precision-recall / calibration / confusion
    or residual plots of the final model; its gate against the baseline blocks registration."""
    name, version = context.partition_key, store.latest("model_candidates", context.partition_key).version
    lineage = store.lineage("model_candidates", name, version)
    spec, clean, split = held_out(store, name, lineage)
    rows, board, metric = clean.loc[split.X_test.index].drop(columns=[spec.target]), store.load(
        "model_candidates", name, version), lineage["metric"]
    models = {row.model: registry.load_uri(row.model_uri) for row in board.itertuples() if row.model_uri}
    scores = pd.DataFrame({m: score_model(model, rows, split.y_test, spec.task, spec.positive_class)
                           for m, model in models.items()}).T.add_prefix("test_")
    board = board.merge(scores, left_on="model", right_index=True, how="left")
    store.save("model_leaderboard", name, board, lineage | {"model_candidates_version": version})
    final, baseline = (float(scores.loc[m, f"test_{metric}"]) for m in ("automl", "baseline"))
    plots = evaluation_plots(models["automl"], rows, split.y_test, spec.task, spec.positive_class)
    context.log.info(f"Leaderboard for {name}: test {metric} {final:.4f} (baseline {baseline:.4f})")
    return dg.MaterializeResult(
        metadata={"leaderboard": markdown_table(board.drop(columns=["run_id", "model_uri", "params"])),
                  f"test_{metric}": final, "test_rows": len(rows), "test_split": split.strategy,
                  "evaluation_plots": dg.MetadataValue.md(figures_markdown(plots))},
        check_results=[dg.AssetCheckResult(check_name="beats_baseline", passed=is_better(metric, final, baseline),
                                           metadata={f"automl_{metric}": final, f"baseline_{metric}": baseline})],
    )
