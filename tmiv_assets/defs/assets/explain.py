"""Explanations of the champion."""

import dagster as dg

from tmiv_assets.defs.assets.data import stored_spec
from tmiv_assets.defs.assets.deploy import champion_model, champion_or_failure
from tmiv_assets.defs.metadata import markdown_table
from tmiv_assets.defs.partitions import dataset_partitions
from tmiv_assets.ml.explain.shap_values import explain_pipeline
from tmiv_assets.ml.plots import figure_to_markdown, importance_plot
from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.feature_store import FeatureStore
from tmiv_assets.resources.model_registry import ModelRegistry


@dg.asset(partitions_def=dataset_partitions, deps=[champion_model], group_name="explanations", kinds={"shap"})
def shap_report(context: dg.AssetExecutionContext, store: FeatureStore, registry: ModelRegistry,
                artifacts: ArtifactStore) -> dg.MaterializeResult:
    """Global SHAP importance of the champion on a sample of the rows it was trained on."""
    name = context.partition_key
    champion = champion_or_failure(registry, name)
    clean_version = int(champion.tags["clean_dataset_version"])
    spec = stored_spec(store, "clean_dataset", name, clean_version)
    clean = store.load("clean_dataset", name, clean_version)
    report = explain_pipeline(registry.load_version(name, champion.version), clean.drop(columns=[spec.target]))
    path = artifacts.write_csv(report.importance, "reports", name,
                                f"shap_importance_v{champion.version}.csv")
    context.log.info(f"SHAP for {name} v{champion.version}: top feature {report.importance['feature'].iloc[0]}")
    return dg.MaterializeResult(metadata={
        "champion_version": int(champion.version),
        "rows_explained": report.n_rows,
        "top_feature": report.importance["feature"].iloc[0],
        "importance": markdown_table(report.importance),
        "importance_plot": dg.MetadataValue.md(figure_to_markdown(importance_plot(report.importance), "importance")),
        "summary_plot": dg.MetadataValue.md(figure_to_markdown(report.summary_figure, "SHAP summary")),
        "importance_file": dg.MetadataValue.path(str(path)),
    })
