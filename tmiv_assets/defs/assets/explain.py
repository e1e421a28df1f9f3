"""Explanations of the champion."""

import json

import dagster as dg
import numpy as np
import pandas as pd

from tmiv_assets.defs.assets.automl import training_sample, version_split
from tmiv_assets.defs.assets.data import stored_spec
from tmiv_assets.defs.assets.deploy import champion_model, champion_or_failure, held_out_test_rows
from tmiv_assets.defs.metadata import engine_errors_as_failure, figures_markdown, markdown_table
from tmiv_assets.defs.partitions import dataset_partitions
from tmiv_assets.ml.explain.fairness import FairnessSettings, assess
from tmiv_assets.ml.explain.importance import IMPORTANCE_ROWS, input_importance
from tmiv_assets.ml.explain.lime_explanations import explain_rows
from tmiv_assets.ml.explain.shap_values import explain_pipeline
from tmiv_assets.ml.explain.what_if import WhatIfSettings, analyse
from tmiv_assets.ml.metrics import resolve_positive_class
from tmiv_assets.ml.plots import fairness_plot, figure_to_markdown, importance_plot
from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import ModelRegistry

# The version's input columns by mean |SHAP|, largest first (top 20), with the version they were measured on: a
# copy of another version's tags must not pass for this one's.
SHAP_RANKING_TAG = "shap_ranking"


@dg.asset(partitions_def=dataset_partitions, deps=[champion_model], group_name="explanations", kinds={"shap"})
def shap_report(context: dg.AssetExecutionContext, store: FeatureStore, registry: ModelRegistry,
                artifacts: ArtifactStore) -> dg.MaterializeResult:
    """SHAP values of the champion on a sample of the rows it was trained on, in its output space (the positive
    class's probability, or the prediction): importance per input column, beeswarm, bar, waterfall and dependence
    plots, and the values themselves as Parquet; exact and additive for the whole ensemble."""
    name = context.partition_key
    champion = champion_or_failure(registry, name)
    clean_version = int(champion.tags["clean_dataset_version"])
    spec = stored_spec(store, "clean_dataset", name, clean_version)
    clean = store.load("clean_dataset", name, clean_version)
    with engine_errors_as_failure(name, f"SHAP could not explain v{champion.version}"):
        report = explain_pipeline(registry.load_version(name, champion.version),
                                  clean.drop(columns=[spec.target]), spec.positive_class)
    path = artifacts.write_csv(report.importance, "reports", name, f"shap_importance_v{champion.version}.csv")
    values = artifacts.write_frame(report.values, "reports", name, f"shap_values_v{champion.version}.parquet")
    # The what-if curves are drawn for the top columns: the ranking travels on the version, not in a file.
    registry.tag(name, champion.version, SHAP_RANKING_TAG, json.dumps(
        {"version": int(champion.version), "columns": list(report.importance["feature"].head(20))}))
    context.log.info(f"SHAP for {name} v{champion.version}: top feature {report.importance['feature'].iloc[0]}; "
                     f"values + base = output within {report.additivity_error:.1e}")
    methods = pd.Series(report.methods).value_counts()
    return dg.MaterializeResult(metadata={
        "champion_version": int(champion.version),
        "rows_explained": report.n_rows,
        "explained_output": report.explained,
        "top_feature": report.importance["feature"].iloc[0],
        "additivity_error": report.additivity_error,
        "explainers": ", ".join(f"{method} x{count}" for method, count in methods.items()),
        "importance": markdown_table(report.importance),
        "importance_plot": dg.MetadataValue.md(figure_to_markdown(importance_plot(report.importance), "importance")),
        "plots": dg.MetadataValue.md(figures_markdown(report.figures)),
        "importance_file": dg.MetadataValue.path(str(path)),
        "values_file": dg.MetadataValue.path(str(values)),
    })


@dg.asset(partitions_def=dataset_partitions, deps=[champion_model], group_name="explanations", kinds={"fairlearn"},
          check_specs=[dg.AssetCheckSpec("fairness_within_bounds", asset="fairness_report", description=(
              "Warns when a sensitive column's disparate impact is under the spec's min_disparate_impact (0.8, the "
              "four-fifths rule) or its equalized-odds difference over max_equalized_odds_difference (0.2)."))])
def fairness_report(context: dg.AssetExecutionContext, store: FeatureStore,
                    registry: ModelRegistry) -> dg.MaterializeResult:
    """The champion's predictions on its held-out test rows per group of each sensitive column of the spec
    (fairlearn): demographic parity, disparate impact, equalized odds, equal opportunity, per-group metrics."""
    name = context.partition_key
    champion = champion_or_failure(registry, name)
    rows, y, spec = held_out_test_rows(version_split(store, champion))
    if not spec.sensitive_columns:
        return dg.MaterializeResult(metadata={"status": "the spec names no sensitive_columns"}, check_results=[
            dg.AssetCheckResult(passed=True, metadata={"reason": "no sensitive_columns to check"})])
    missing = [c for c in spec.sensitive_columns if c not in rows.columns]
    if missing:
        raise dg.Failure(description=f"[{name}] sensitive_columns {missing} are not columns of the data (columns: "
                                     f"{list(rows.columns)}); fix sensitive_columns in {spec.spec_path}")
    model = registry.load_version(name, champion.version)
    predicted = model.predict(rows[list(model.feature_names_in_)])
    bounds = FairnessSettings.from_mapping(spec.fairness)
    results = assess(y, predicted, rows[list(spec.sensitive_columns)], spec.task, spec.positive_class, bounds)
    violations = [v for r in results for v in r.violations]
    measure = "mean_prediction" if spec.task == "regression" else "selection_rate"
    (context.log.warning if violations else context.log.info)(
        f"Fairness of {name} v{champion.version}: {'; '.join(violations) or 'within bounds'}")
    metadata = {"champion_version": int(champion.version), "test_rows": len(rows),
                "plot": dg.MetadataValue.md(figure_to_markdown(
                    fairness_plot({r.column: r.groups for r in results}, measure), "fairness"))}
    for result in results:
        metadata[f"{result.column}_groups"] = markdown_table(result.groups)
        metadata |= {f"{result.column}_{key}": value for key, value in result.summary.items()}
        metadata[f"{result.column}_grouping"] = result.grouping
    check = dg.AssetCheckResult(passed=not violations, severity=dg.AssetCheckSeverity.WARN,
                                metadata={"violations": "; ".join(violations) or "none", **bounds.__dict__})
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


@dg.asset(partitions_def=dataset_partitions, deps=[champion_model], group_name="explanations",
          kinds={"scikitlearn"})
def permutation_importance(context: dg.AssetExecutionContext, store: FeatureStore,
                           registry: ModelRegistry) -> dg.MaterializeResult:
    """How much the champion's test metric drops when each input column is shuffled on its held-out test rows
    (up to 2,000 of them; five shuffles, mean and spread)."""
    name = context.partition_key
    champion = champion_or_failure(registry, name)
    rows, y, spec = held_out_test_rows(version_split(store, champion))
    metric = champion.tags["metric"]
    table = input_importance(registry.load_version(name, champion.version), rows, y, spec.task, metric,
                             spec.positive_class)
    context.log.info(f"Permutation importance for {name} v{champion.version}: top {table['feature'].iloc[0]} "
                     f"({metric} drop {table['importance_mean'].iloc[0]:.4f})")
    plot = importance_plot(table, value="importance_mean", label=f"{metric} lost when the column is shuffled")
    return dg.MaterializeResult(metadata={
        "champion_version": int(champion.version), "metric": metric, "test_rows": min(len(rows), IMPORTANCE_ROWS),
        "top_feature": table["feature"].iloc[0], "importance": markdown_table(table),
        "plot": dg.MetadataValue.md(figure_to_markdown(plot, "permutation importance"))})


def rows_to_explain(model, rows: pd.DataFrame, y: pd.Series, classifier: bool, positive_class,
                    each: int = 3) -> dict[str, list]:
    """Index labels of representative rows (at low, middle and high predicted score) and of the worst-predicted
    ones (confidently wrong classes, or the largest errors)."""
    columns = list(model.feature_names_in_)
    if classifier:
        proba = model.predict_proba(rows[columns])
        label = list(model.classes_).index(resolve_positive_class(model.classes_, positive_class))
        score = pd.Series(proba[:, label], index=rows.index)
        predicted = pd.Series(model.classes_[proba.argmax(axis=1)], index=rows.index)  # what predict returns
        wrong = predicted.astype(str) != y.astype(str)
        badness = pd.Series(proba.max(axis=1), index=rows.index)[wrong]
    else:
        score = pd.Series(model.predict(rows[columns]), index=rows.index)
        badness = (score - y).abs()
    ordered = score.sort_values(kind="stable")
    representative = [ordered.index[int(q * (len(ordered) - 1))] for q in np.linspace(0.1, 0.9, each)]
    return {"representative": representative,
            "worst predicted": badness.sort_values(ascending=False, kind="stable").index[:each].tolist()}


@dg.asset(partitions_def=dataset_partitions, deps=[champion_model], group_name="explanations", kinds={"lime"})
def lime_report(context: dg.AssetExecutionContext, store: FeatureStore,
                registry: ModelRegistry) -> dg.MaterializeResult:
    """LIME explanations of a few representative and a few worst-predicted held-out test rows of the champion,
    each repeated with other seeds to show how stable it is."""
    name = context.partition_key
    champion = champion_or_failure(registry, name)
    held = version_split(store, champion)
    rows, y, spec = held_out_test_rows(held)
    background = training_sample(held, 500)
    model = registry.load_version(name, champion.version)
    chosen = rows_to_explain(model, rows, y, spec.is_classification, spec.positive_class)
    metadata, stabilities = {"champion_version": int(champion.version)}, []
    for kind, labels in chosen.items():
        sections = []
        for result in explain_rows(model, background, rows.loc[labels], spec.is_classification, spec.positive_class):
            stabilities.append(result.stability)
            sections.append(f"**row {result.row}**: predicted {result.prediction!r}, actual {y.loc[result.row]!r}; "
                            f"{result.explained}; top-feature stability {result.stability:.2f}\n\n"
                            f"{markdown_table(result.weights.round(4)).value}")
        metadata[kind.replace(" ", "_")] = dg.MetadataValue.md("\n\n".join(sections) or "none")
    metadata["rows_explained"] = len(stabilities)
    metadata["mean_stability"] = round(float(np.mean(stabilities)), 3) if stabilities else None
    context.log.info(f"LIME for {name} v{champion.version}: {len(stabilities)} rows, mean top-feature stability "
                     f"{metadata['mean_stability']}")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(partitions_def=dataset_partitions, deps=[shap_report], group_name="explanations", kinds={"scikitlearn"})
def what_if_report(context: dg.AssetExecutionContext, store: FeatureStore,
                   registry: ModelRegistry) -> dg.MaterializeResult:
    """What-if analysis of the champion: partial dependence and ICE curves for its most influential input columns
    (by shap_report's ranking of the same version), and counterfactuals for misclassified and rejected held-out rows
    (low predictions for regression): the fewest changes to actionable columns, within the training rows' ranges,
    that reach another outcome, each verified."""
    name = context.partition_key
    champion = champion_or_failure(registry, name)
    held = version_split(store, champion)
    rows, y, spec = held_out_test_rows(held)
    settings = WhatIfSettings.from_mapping(spec.what_if)
    model = registry.load_version(name, champion.version)
    reference = training_sample(held, 2000)
    ranking = json.loads(champion.tags.get(SHAP_RANKING_TAG, "{}"))
    if ranking.get("version") != int(champion.version):
        raise dg.Failure(description=f"[{name}] v{champion.version} has no SHAP ranking of its columns yet, which the "
                                     f"what-if curves follow; fix: materialize shap_report for {name} first")
    ranked = ranking["columns"]
    # curves over raw columns a person can set: not the id or time, nor a product or ratio of two columns
    features = [c for c in ranked if c in model.feature_names_in_ and c not in spec.key_columns][:settings.features]
    frozen = [*settings.immutable_columns, *spec.sensitive_columns, *spec.key_columns]
    report = analyse(model, rows, y, reference, spec.task, spec.positive_class, features, frozen, settings)
    found = int(report.counterfactuals["found"].sum()) if len(report.counterfactuals) else 0
    context.log.info(f"What-if for {name} v{champion.version}: curves for {features}; counterfactuals found for "
                     f"{found} of {len(report.counterfactuals)} rows")
    return dg.MaterializeResult(metadata={
        "champion_version": int(champion.version), "explained_output": report.explained, "features": features,
        "frozen_columns": frozen, "counterfactuals_found": found, "rows_analysed": len(report.counterfactuals),
        "counterfactuals": markdown_table(report.counterfactuals) if len(report.counterfactuals) else
        dg.MetadataValue.md("no misclassified, rejected or low-predicted held-out rows to explain"),
        "partial_dependence": markdown_table(report.curves.round(4)),
        "plot": dg.MetadataValue.md(figure_to_markdown(report.figure, "partial dependence and ICE"))})
