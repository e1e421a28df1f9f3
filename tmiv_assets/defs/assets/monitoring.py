"""Batch scoring with the champion and drift of each batch against the champion's training data."""

import dagster as dg
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from pydantic import Field

from tmiv_assets.defs.assets.automl import training_sample, version_split
from tmiv_assets.defs.assets.data import stored_spec, trained_batch_days, trained_with
from tmiv_assets.defs.assets.deploy import champion_model, champion_or_failure, version_scores
from tmiv_assets.defs.metadata import bad_input_as_failure, engine_errors_as_failure, markdown_table
from tmiv_assets.defs.partitions import batch_partitions, dataset_partitions
from tmiv_assets.ml.data.ingest import join_labels, require_columns, validate_batch
from tmiv_assets.ml.data.spec import DatasetSpec
from tmiv_assets.ml.deploy.ab_testing import ArmComparison, assign_arms, compare_arms
from tmiv_assets.ml.deploy.serving import predict_rows
from tmiv_assets.ml.explain.shap_values import reason_codes
from tmiv_assets.ml.metrics import LOWER_IS_BETTER, score_model
from tmiv_assets.ml.monitoring.drift import evidently_report
from tmiv_assets.ml.monitoring.estimation import PerformanceEstimator
from tmiv_assets.ml.monitoring.policy import RetrainSettings, decide_rollback
from tmiv_assets.ml.monitoring.statistics import DriftSettings, DriftStatistics
from tmiv_assets.ml.plots import drift_plot, figure_to_markdown, monitoring_history_plot
from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import CHALLENGER, ModelRegistry
from tmiv_assets.resources.prediction_log import PredictionLog


class DriftConfig(dg.Config):
    drift_share: float | None = Field(default=None, gt=0, le=1, description=(
        "A batch drifts when at least this share of its columns drift; empty: the dataset spec's "
        "drift.drift_share, else 0.3."))


def batch_key(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """(dataset, day) of a batch partition."""
    # A run launched from the shell carries the key as the string "flights|2013-07-22", not a MultiPartitionKey.
    keys = batch_partitions.get_partition_key_from_str(str(context.partition_key)).keys_by_dimension
    return keys["dataset"], keys["day"]


def batch_inputs(context: dg.AssetExecutionContext, source: DataSource, store: FeatureStore,
                 registry: ModelRegistry) -> tuple[str, str, ModelVersion, DatasetSpec, pd.DataFrame]:
    """(dataset, day, champion, the spec it was trained with, the batch) for a batch partition."""
    dataset, day = batch_key(context)
    champion = champion_or_failure(registry, dataset)
    spec, schema = trained_with(store, dataset, int(champion.tags["clean_dataset_version"]))
    with bad_input_as_failure(context.partition_key):
        batch = source.read_batch(dataset, day)
        validate_batch(batch, schema, source.batch_path(dataset, day), skip={spec.target, *spec.key_columns})
    return dataset, day, champion, spec, batch


class ScoringConfig(dg.Config):
    challenger_share: float | None = Field(default=None, ge=0, lt=1, description=(
        "A/B test: the share of rows, chosen by a hash of the id column (a row keeps its arm), that the "
        "challenger scores; empty: the dataset spec's ab_test.challenger_share (none: every row by the champion)."))
    challenger_version: int | None = Field(default=None, description=(
        "The version in the challenger arm; empty: the version aliased `challenger`."))


def ab_arms(context: dg.AssetExecutionContext, config: ScoringConfig, source: DataSource, registry: ModelRegistry,
            dataset: str, spec: DatasetSpec) -> tuple[float, ModelVersion | None]:
    """(challenger share, challenger version) of the batch's A/B test, from the run config or else the spec."""
    share = config.challenger_share
    if share is None:
        with bad_input_as_failure(context.partition_key):
            share = source.dataset_spec(dataset).ab_test.get("challenger_share", 0.0)
    if share == 0:
        return 0.0, None
    try:
        challenger = (registry.version(dataset, config.challenger_version) if config.challenger_version is not None
                      else registry.aliased(dataset, CHALLENGER))
    except LookupError as error:
        raise dg.Failure(description=f"[{context.partition_key}] A/B test: {error}; fix challenger_version") from error
    if challenger is None or not spec.id_column:
        raise dg.Failure(description=f"[{context.partition_key}] an A/B test needs a challenger version and an "
                                     "id_column; registered_model aliases a new model that the champion gate rejects "
                                     "`challenger` (or set challenger_version), or set challenger_share to 0")
    return share, challenger


REASONS = 3  # reason codes per scored row
REASON_BACKGROUND = 100  # training rows that linear and model-agnostic members are explained against


@dg.asset(partitions_def=batch_partitions, deps=[champion_model], group_name="monitoring", kinds={"parquet", "shap"})
def scored_batch(context: dg.AssetExecutionContext, config: ScoringConfig, source: DataSource, store: FeatureStore,
                 registry: ModelRegistry, artifacts: ArtifactStore,
                 prediction_log: PredictionLog) -> dg.MaterializeResult:
    """Predictions of the champion (and, in an A/B test, the challenger) for one day's batch, each row with its
    reason codes: the input columns that moved its score most, with their signed SHAP values."""
    dataset, day, champion, spec, batch = batch_inputs(context, source, store, registry)
    share, challenger = ab_arms(context, config, source, registry, dataset, spec)
    versions = {"champion": champion} | ({"challenger": challenger} if challenger else {})
    arms = assign_arms(batch[spec.id_column], share, salt=dataset) if challenger else np.full(len(batch), "champion")
    keep = [spec.id_column] if spec.id_column else []
    models = {arm: registry.load_version(dataset, version.version) for arm, version in versions.items()}
    parts = []
    for arm, version in versions.items():
        with bad_input_as_failure(context.partition_key):
            require_columns(batch, list(models[arm].feature_names_in_), source.batch_path(dataset, day))
        rows = batch[arms == arm]
        if rows.empty:
            continue
        columns = list(models[arm].feature_names_in_)
        with engine_errors_as_failure(context.partition_key, f"reason codes of v{version.version}"):
            reasons = reason_codes(models[arm], rows[columns], training_sample(version_split(store, version),
                                                                               REASON_BACKGROUND)[columns],
                                   spec.positive_class, top=REASONS)
        parts.append(predict_rows(models[arm], rows, spec.task, spec.positive_class, keep=keep, probabilities=False)
                     .assign(arm=arm, model_version=int(version.version)).join(reasons))
    scored = pd.concat(parts).loc[batch.index]
    scored["champion_version"] = int(champion.version)
    path = artifacts.write_frame(scored, "batches", dataset, day, "scored.parquet")
    request = prediction_log.record(f"{dataset}|{day}", champion.name, scored["model_version"], scored["prediction"],
                                    scored.get("score"), batch[spec.id_column] if spec.id_column else None,
                                    arm=scored["arm"])
    metadata = {"dagster/row_count": len(scored), "champion_version": int(champion.version),
                "rows_per_arm": scored["arm"].value_counts().to_dict(), "prediction_log_request": request,
                "path": dg.MetadataValue.path(str(path)), "preview": markdown_table(scored.head(5))}
    context.log.info(f"Scored {len(scored):,} rows of {dataset} {day}: {metadata['rows_per_arm']}")
    return dg.MaterializeResult(metadata=metadata)


DEFAULT_MAX_RELATIVE_DROP = 0.05
ESTIMABLE = {"binary": ("roc_auc", "accuracy", "f1"), "multiclass": ("f1_macro", "accuracy")}


def allowed_drop(thresholds: dict[str, float], reference: float) -> float:
    """The spec's `performance` thresholds as one drop in the metric's units: the stricter of max_drop and
    max_relative_drop (5% of the reference score by default)."""
    return min(thresholds.get("max_drop", np.inf),
               thresholds.get("max_relative_drop", DEFAULT_MAX_RELATIVE_DROP) * abs(reference))


def served_version(registry: ModelRegistry, prediction_log: PredictionLog, dataset: str, day: str,
                   champion: ModelVersion) -> ModelVersion:
    """The version that scored the batch's champion arm (the champion may have changed since)."""
    logged = prediction_log.rows(f"{dataset}|{day}")
    served = logged.loc[logged["arm"] == "champion", "model_version"]
    return registry.version(dataset, int(served.mode().iloc[0])) if len(served) else champion


def rows_new_to(store: FeatureStore, versions: list[ModelVersion], day: str, labelled: pd.DataFrame,
                id_column: str) -> pd.DataFrame:
    """The batch's labelled rows that none of `versions` trained on: every row for a version that never saw
    the batch, only the rows its split held out (by id) for one that trained on it."""
    keep = pd.Series(True, index=labelled.index)
    for version in versions:
        if day in trained_batch_days(store, version.tags["dataset"], version):
            _, clean, split = version_split(store, version)
            keep &= labelled[id_column].astype(str).isin(set(clean.loc[split.X_test.index, id_column].astype(str)))
    return labelled[keep]


def estimated_performance(store: FeatureStore, version: ModelVersion, model, batch: pd.DataFrame, reference: float,
                          allowed: float) -> dict:
    """CBPE: the version's metrics on the unlabelled batch, estimated from its probabilities calibrated on
    its own held-out test rows, with a 95% band."""
    spec, clean, split = version_split(store, version)
    columns = list(model.feature_names_in_)
    estimator = PerformanceEstimator(model.classes_, spec.positive_class).fit(
        model.predict_proba(clean.loc[split.X_test.index, columns]), split.y_test)
    metric = version.tags["metric"]
    estimates = estimator.estimate(model.predict_proba(batch[columns]), ESTIMABLE[spec.task])
    metadata = {f"estimated_{name}": round(e.value, 4) for name, e in estimates.items()}
    metadata |= {f"estimated_{name}_band_95": [round(e.lower, 4), round(e.upper, 4)] for name, e in estimates.items()}
    if metric in estimates:
        # A trigger only when even the band's upper end is below the threshold: estimates are the noisier signal.
        metadata |= {"estimated_drop": round(reference - estimates[metric].value, 4),
                     "estimated_below_threshold": bool(reference - estimates[metric].upper > allowed)}
    return metadata


def rollback_check(context: dg.AssetExecutionContext, registry: ModelRegistry, store: FeatureStore,
                   served: ModelVersion, model, labelled: pd.DataFrame, spec: DatasetSpec, day: str,
                   margin: float) -> dict:
    """Was `served` put in place by an automatic decision and does it, on this batch's labelled rows that
    neither trained on, score worse than the champion before it by more than `margin`? Then the champion
    goes back."""
    dataset, metric = spec.name, served.tags["metric"]
    promoted = [d for d in registry.history(dataset) if d.after == int(served.version)
                and d.action in ("register", "promote") and d.before not in (None, d.after)]
    if not promoted:
        return {"rollback": "no previous champion to compare with"}
    previous = registry.version(dataset, promoted[-1].before)
    labelled = rows_new_to(store, [previous], day, labelled, spec.id_column)
    if labelled.empty:
        return {"rollback": f"every labelled row of batch {day} is in the training data of v{previous.version}"}
    try:
        live = score_model(model, labelled[list(model.feature_names_in_)], labelled[spec.target], spec.task,
                           spec.positive_class)[metric]
        before = version_scores(registry, dataset, previous.version, labelled, labelled[spec.target], spec)[metric]
    except (KeyError, ValueError) as error:  # rows that cannot be compared are no reason to go back
        return {"rollback": f"not compared on batch {day} ({type(error).__name__}: {error})"}
    decision = decide_rollback(metric, live, before, margin,
                               f"batch {day}'s {len(labelled)} labelled rows neither trained on")
    metadata = {"rollback": decision.reason, f"previous_champion_{metric}": before,
                "previous_champion_version": int(previous.version)}
    champion = registry.champion(dataset)
    if not decision.rollback or champion is None or champion.version != served.version:
        return metadata
    if promoted[-1].trigger == "manual":
        return metadata | {"rollback": f"{decision.reason}; v{served.version} was promoted by hand, so it stays "
                                       "until rollback_model is run"}
    registry.rollback(dataset, previous.version, reason=decision.reason, trigger="performance",
                      run_id=context.run_id)
    context.instance.add_run_tags(context.run_id, {"tmiv/decision": "rollback",
                                                   "tmiv/rolled_back": f"v{served.version}->v{previous.version}"})
    context.log.warning(f"{dataset}: champion v{served.version} rolled back to v{previous.version}: {decision.reason}")
    return metadata | {"rolled_back_to": int(previous.version)}


@dg.asset(partitions_def=batch_partitions, deps=[scored_batch], group_name="monitoring", kinds={"mlflow"})
def model_performance(context: dg.AssetExecutionContext, source: DataSource, store: FeatureStore,
                      registry: ModelRegistry, prediction_log: PredictionLog) -> dg.MaterializeResult:
    """How the version that scored a batch performs on it: estimated from its probabilities while labels are
    missing (classifiers, CBPE), realised once they arrive, next to its test score and the spec's
    `performance` thresholds; a champion deployed automatically that does worse than its predecessor on the
    same new rows is rolled back (spec `retrain.rollback_margin`)."""
    dataset, day, champion, spec, batch = batch_inputs(context, source, store, registry)
    served = served_version(registry, prediction_log, dataset, day, champion)
    with bad_input_as_failure(context.partition_key):
        current = source.dataset_spec(dataset)
        labels = source.read_labels(dataset, day)
        labelled = join_labels(batch, labels, spec, day) if labels is not None and spec.id_column else None
    model, metric = registry.load_version(dataset, served.version), served.tags["metric"]
    reference = float(served.tags[f"test_{metric}"])
    allowed = allowed_drop(current.performance, reference)
    metadata = {"served_version": int(served.version), "champion_version": int(champion.version), "metric": metric,
                f"test_{metric}": reference, "allowed_drop": round(allowed, 4), "batch_rows": len(batch)}
    if spec.is_classification:
        metadata |= estimated_performance(store, served, model, batch, reference, allowed)
    if labelled is None:
        status = "no labels yet" if labels is None else "no id_column to join labels on"
        return dg.MaterializeResult(metadata=metadata | {"status": status})
    # Once labels arrived the realised metric decides; the estimate stays beside it for comparison.
    metadata["estimated_below_threshold"] = False
    # Rows the version trained on say nothing about its decline; the rows its split held out still do.
    in_training = day in trained_batch_days(store, dataset, served)
    unseen = rows_new_to(store, [served], day, labelled, spec.id_column) if in_training else labelled
    metadata |= {"labelled_rows": len(labelled), "unseen_rows": len(unseen), "in_training_data": in_training}
    if unseen.empty:
        return dg.MaterializeResult(metadata=metadata | {"status": f"v{served.version} trained on every labelled row"})
    live = score_model(model, unseen[list(model.feature_names_in_)], unseen[spec.target], spec.task,
                       spec.positive_class)
    drop = live[metric] - reference if metric in LOWER_IS_BETTER else reference - live[metric]
    below = bool(drop > allowed)
    (context.log.warning if below else context.log.info)(
        f"{dataset} {day}: v{served.version} live {metric} {live[metric]:.4f} on {len(unseen)} rows vs test "
        f"{reference:.4f} (drop {drop:.4f}, allowed {allowed:.4f}); estimated "
        f"{metadata.get(f'estimated_{metric}', 'n/a')}")
    metadata |= {"status": "measured", f"live_{metric}": live[metric], "drop": round(drop, 4),
                 "below_threshold": below, **{f"live_{name}": value for name, value in live.items() if name != metric}}
    margin = RetrainSettings.from_mapping(current.retrain).rollback_margin
    metadata |= rollback_check(context, registry, store, served, model, unseen, spec, day, margin)
    return dg.MaterializeResult(metadata=metadata)


DEFAULT_MIN_DETECTABLE_EFFECT = 0.02


def ab_comparison(dataset: str, day: str, source: DataSource, store: FeatureStore, registry: ModelRegistry,
                  prediction_log: PredictionLog, min_detectable_effect: float | None) -> ArmComparison | str:
    """The arms of a batch's A/B test compared on its labelled rows, or why they cannot be yet; the rows come
    from the prediction log (what each arm actually predicted) joined with the day's labels."""
    champion = champion_or_failure(registry, dataset)
    spec = stored_spec(store, "clean_dataset", dataset, int(champion.tags["clean_dataset_version"]))
    logged = prediction_log.rows(f"{dataset}|{day}")
    labels = source.read_labels(dataset, day)
    if labels is None or logged["arm"].nunique() < 2 or not spec.id_column:
        return "no labels yet" if labels is None else "the batch was not scored as an A/B test"
    joined = logged.merge(labels.assign(entity_id=labels[spec.id_column].astype(str)), on="entity_id")
    try:
        return compare_arms(joined["arm"], joined[spec.target], joined["prediction"], spec.is_classification,
                            min_detectable_effect or source.dataset_spec(dataset).ab_test.get(
                                "min_detectable_effect", DEFAULT_MIN_DETECTABLE_EFFECT))
    except ValueError as error:
        raise dg.Failure(description=f"[{dataset}|{day}] A/B comparison: {error}") from error


class ABTestConfig(dg.Config):
    min_detectable_effect: float | None = Field(default=None, gt=0, description=(
        "Smallest difference worth detecting (accuracy points, or mean absolute error for regression); empty: "
        "the dataset spec's ab_test.min_detectable_effect, else 0.02."))


@dg.asset(partitions_def=batch_partitions, deps=[scored_batch], group_name="monitoring", kinds={"duckdb"})
def ab_test_report(context: dg.AssetExecutionContext, config: ABTestConfig, source: DataSource,
                   store: FeatureStore, registry: ModelRegistry, prediction_log: PredictionLog) -> dg.MaterializeResult:
    """Champion against challenger on a batch's labelled rows: per-arm counts and metric, significance, the
    sample size still needed, and a recommendation."""
    dataset, day = batch_key(context)
    with bad_input_as_failure(context.partition_key):
        comparison = ab_comparison(dataset, day, source, store, registry, prediction_log,
                                   config.min_detectable_effect)
    if isinstance(comparison, str):
        return dg.MaterializeResult(metadata={"status": comparison, "rows_per_arm": prediction_log.rows(
            f"{dataset}|{day}")["arm"].value_counts().to_dict()})
    context.log.info(f"A/B {dataset} {day}: {comparison.recommendation}")
    return dg.MaterializeResult(metadata={
        "status": "compared", "rows_per_arm": comparison.rows, "metric": comparison.metric,
        "value_per_arm": comparison.values, "p_value": comparison.p_value if comparison.p_value is not None else "n/a",
        "difference_interval_95": list(comparison.interval), "significant": comparison.significant,
        "rows_needed_per_arm": comparison.rows_needed_per_arm, "recommendation": comparison.recommendation})


OUTPUT_REFERENCE_ROWS = 50_000


def output_drift(registry: ModelRegistry, champion: ModelVersion, spec: DatasetSpec, reference: pd.DataFrame,
                 logged: pd.DataFrame, labels: pd.DataFrame | None, settings: DriftSettings) -> dict:
    """Prediction drift: the outputs the batch was served (the positive or predicted class's probability, or
    the predicted value) against the champion's outputs on a seeded sample of its reference rows; target
    drift once the batch's labels arrived."""
    if logged.empty:
        return {"prediction_drift": "batch not scored yet"}
    sample = reference.sample(n=min(len(reference), OUTPUT_REFERENCE_ROWS), random_state=0)
    model = registry.load_version(spec.name, champion.version)
    expected = predict_rows(model, sample, spec.task, spec.positive_class, probabilities=False)
    served = logged["probability"] if spec.is_classification else logged["prediction"].astype(float)
    column = "score" if spec.is_classification else "prediction"
    outputs = DriftStatistics(settings).fit(expected[[column]].set_axis(["output"], axis=1)).compare(
        pd.DataFrame({"output": served.to_numpy(dtype=float)})).per_column.iloc[0]
    metadata = {"prediction_drift": bool(outputs["drifted"]), "prediction_drift_test": outputs["test"],
                "prediction_drift_score": round(float(outputs["score"]), 4)}
    if labels is None:
        return metadata | {"target_drift": "no labels yet"}
    target = DriftStatistics(settings).fit(reference[[spec.target]]).compare(labels[[spec.target]]).per_column.iloc[0]
    return metadata | {"target_drift": bool(target["drifted"]), "target_drift_test": target["test"],
                       "target_drift_score": round(float(target["score"]), 4)}


@dg.asset(partitions_def=batch_partitions, deps=[scored_batch], group_name="monitoring", kinds={"evidently"})
def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, source: DataSource, store: FeatureStore,
                 registry: ModelRegistry, artifacts: ArtifactStore,
                 prediction_log: PredictionLog) -> dg.MaterializeResult:
    """Per-column drift of the batch against the rows the champion was trained on, with an Evidently report."""
    dataset, day, champion, spec, batch = batch_inputs(context, source, store, registry)
    reference_version = int(champion.tags["clean_dataset_version"])
    reference = store.load("clean_dataset", dataset, reference_version)
    skip = {spec.target, *spec.key_columns, *spec.exclude_columns}
    columns = [c for c in reference.columns if c not in skip and c in batch.columns]
    with bad_input_as_failure(context.partition_key):
        settings = DriftSettings.from_mapping(source.dataset_spec(dataset).drift | (
            {"drift_share": config.drift_share} if config.drift_share is not None else {}))
    verdict = DriftStatistics(settings).fit(reference[columns]).compare(batch[columns])
    with bad_input_as_failure(context.partition_key):
        labels = source.read_labels(dataset, day)
    outputs = output_drift(registry, champion, spec, reference, prediction_log.rows(f"{dataset}|{day}"), labels,
                           settings)
    evidently = evidently_report(reference[columns], batch[columns], settings.drift_share)
    html_path = artifacts.write_text(evidently.snapshot.get_html_str(as_iframe=False), "batches", dataset, day,
                                     "drift_report.html")
    per_column = verdict.per_column.merge(
        evidently.per_column[["column", "drifted"]].rename(columns={"drifted": "evidently_drifted"}), on="column")
    drifted = per_column.loc[per_column["drifted"], "column"].tolist()
    context.log.info(f"Drift {dataset} {day}: {len(drifted)}/{len(columns)} columns drifted "
                     f"({', '.join(drifted) or 'none'}); drift_detected={verdict.drift_detected}")
    return dg.MaterializeResult(metadata={
        "drift_detected": verdict.drift_detected,
        "drifted_share": round(verdict.drifted_share, 4),
        "drift_share_threshold": settings.drift_share,
        "method": f"{settings.method} (alpha {settings.alpha}, correction {settings.correction}, distance "
                  f"{settings.distance_threshold}, PSI {settings.psi_threshold})",
        "drifted_columns": ", ".join(drifted) or "none",
        "evidently_agrees_on_columns": int((per_column["drifted"] == per_column["evidently_drifted"]).sum()),
        **outputs,
        "reference": f"clean_dataset v{reference_version} (champion v{champion.version})",
        "batch_rows": len(batch),
        "per_column": markdown_table(per_column.round(4)),
        "drift_plot": dg.MetadataValue.md(figure_to_markdown(drift_plot(per_column), "drift")),
        "evidently_report": dg.MetadataValue.path(str(html_path)),
    })


BY_DATASET = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="dataset")
HISTORY_FIELDS = {drift_report: ("batch_rows", "drift_detected", "drifted_share", "prediction_drift_score",
                                 "target_drift_score"),
                  model_performance: ("served_version", "metric", "status", "labelled_rows", "below_threshold",
                                      "estimated_below_threshold", "rollback")}


def batch_metadata(instance: dg.DagsterInstance, asset: dg.AssetsDefinition, dataset: str) -> pd.DataFrame:
    """The latest materialization's metadata per batch day of `dataset`, one row per day."""
    partitions = sorted(p for p in instance.get_materialized_partitions(asset.key) if p.startswith(f"{dataset}|"))
    if not partitions:
        return pd.DataFrame({"day": []})
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=partitions), limit=len(partitions) * 20,
        ascending=True).records
    latest = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records}
    rows = []
    for partition, metadata in latest.items():
        row = {"day": partition.split("|", 1)[1]} | {k: metadata[k].value for k in HISTORY_FIELDS[asset]
                                                      if k in metadata}
        if asset is model_performance and "metric" in metadata:
            metric = metadata["metric"].value
            band = metadata.get(f"estimated_{metric}_band_95")
            row |= {"test_score": metadata[f"test_{metric}"].value,
                    "estimated": metadata[f"estimated_{metric}"].value if f"estimated_{metric}" in metadata else None,
                    "estimated_lower": band.value[0] if band else None,
                    "estimated_upper": band.value[1] if band else None,
                    "realised": metadata[f"live_{metric}"].value if f"live_{metric}" in metadata else None}
        rows.append(row)
    return pd.DataFrame(rows)


def trainings(registry: ModelRegistry, dataset: str) -> pd.DataFrame:
    """Every registered version of the dataset: when, what triggered it and why (the retrain policy's
    reason), and the champion gate's verdict."""
    return pd.DataFrame([{"version": int(v.version),
                          "registered": pd.Timestamp(v.creation_timestamp, unit="ms").isoformat(timespec="seconds"),
                          "trigger": v.tags.get("trigger", "manual"), "policy_reason": v.tags.get("policy_reason", ""),
                          "gate": v.tags.get("gate", ""), "decision": v.tags.get("decision", "")}
                         for v in sorted(registry.versions(dataset), key=lambda v: int(v.version))])


@dg.asset(partitions_def=dataset_partitions, group_name="monitoring", kinds={"pandas"},
          deps=[dg.AssetDep(drift_report, partition_mapping=BY_DATASET),
                dg.AssetDep(model_performance, partition_mapping=BY_DATASET)])
def monitoring_history(context: dg.AssetExecutionContext, registry: ModelRegistry) -> dg.MaterializeResult:
    """The dataset's monitoring over all batch days: volume, drift share, prediction drift, estimated and
    realised performance of the model that served each batch, and every retrain and lifecycle decision."""
    dataset = context.partition_key
    drift = batch_metadata(context.instance, drift_report, dataset)
    performance = batch_metadata(context.instance, model_performance, dataset)
    history = drift.merge(performance, on="day", how="outer").sort_values("day").reset_index(drop=True)
    registered = trainings(registry, dataset) if registry.champion(dataset) else pd.DataFrame()
    decisions = pd.DataFrame([vars(d) for d in registry.history(dataset)]) if len(registered) else pd.DataFrame()
    metric = performance["metric"].dropna().iloc[-1] if "metric" in performance and len(performance) else "metric"
    metadata = {"days": len(history), "trainings": len(registered),
                "automatic_retrains": int((registered["trigger"] != "manual").sum()) if len(registered) else 0,
                "lifecycle_decisions": len(decisions),
                "drifted_days": int(history.get("drift_detected", pd.Series(dtype=bool)).fillna(False).sum()),
                "history": markdown_table(history) if len(history) else "no batches yet",
                "trainings_table": markdown_table(registered) if len(registered) else "none",
                "decisions": markdown_table(decisions[["at", "action", "before", "after", "trigger", "reason"]])
                if len(decisions) else "none"}
    if len(history):
        metadata["plot"] = dg.MetadataValue.md(figure_to_markdown(monitoring_history_plot(history, metric),
                                                                  "monitoring history"))
    return dg.MaterializeResult(metadata=metadata)
