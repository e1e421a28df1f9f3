"""Engineered feature sets, versioned in the feature store, and their ranking."""

import dagster as dg
from pydantic import Field

from tmiv_assets.defs.assets.data import clean_dataset, stored_spec, stored_version_metadata
from tmiv_assets.defs.metadata import column_schema, markdown_table
from tmiv_assets.defs.partitions import dataset_partitions
from tmiv_assets.ml.features.builder import FeatureBuilder
from tmiv_assets.ml.features.selection import rank_features
from tmiv_assets.resources.artifacts import ArtifactStore
from tmiv_assets.resources.feature_store import FeatureStore


class FeatureConfig(dg.Config):
    auto_features: bool = Field(default=False, description="Add pairwise products, safe ratios and row aggregates "
                                                           "of the numeric columns (AutoFeatures).")
    max_interactions: int = Field(default=10, ge=0, description="Numeric column pairs used by auto_features.")


@dg.asset(partitions_def=dataset_partitions, deps=[clean_dataset], group_name="features",
          kinds={"duckdb", "parquet"})
def feature_set(context: dg.AssetExecutionContext, config: FeatureConfig, store: FeatureStore) -> dg.MaterializeResult:
    """Model inputs plus the target: identifiers dropped, the time column expanded into calendar features,
    optionally automatic interaction features. The builder's parameters go into the lineage, so training
    rebuilds exactly this transform in front of the served model."""
    name = context.partition_key
    clean_version = store.latest("clean_dataset", name).version
    clean = store.load("clean_dataset", name, clean_version)
    spec = stored_spec(store, "clean_dataset", name, clean_version)
    builder = FeatureBuilder.from_spec(spec, auto_features=config.auto_features,
                                       max_interactions=config.max_interactions).fit(clean.drop(columns=[spec.target]))
    features = builder.transform(clean)
    previous = store.latest("feature_set", name)
    lineage = {"clean_dataset_version": clean_version, "spec": spec.to_record(), "builder": builder.get_params()}
    version = store.save("feature_set", name, features, lineage)
    changes = store.diff_schemas("feature_set", name, previous.version, version.version) if previous else None
    generated = sorted(set(features.columns) - set(clean.columns))
    context.log.info(f"{features.shape[1] - 1} features for {name}, {len(generated)} generated")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(features),
        "dagster/column_schema": column_schema(features),
        "n_features": features.shape[1] - 1,
        "generated_features": ", ".join(generated) or "none",
        "schema_changes": "first version" if changes is None else "none" if changes.unchanged else
        f"added {list(changes.added)}, removed {list(changes.removed)}, retyped {list(changes.type_changed)}",
        "preview": markdown_table(features.head(5)),
        **stored_version_metadata(version),
    })


@dg.asset(partitions_def=dataset_partitions, deps=[feature_set], group_name="features", kinds={"scikitlearn"})
def selected_features(context: dg.AssetExecutionContext, store: FeatureStore,
                      artifacts: ArtifactStore) -> dg.MaterializeResult:
    """Features ranked by variance, correlation, mutual information, L1 and tree importance; kept on 2+ votes."""
    name = context.partition_key
    version = store.latest("feature_set", name)
    spec = stored_spec(store, "feature_set", name, version.version)
    selector = rank_features(store.load("feature_set", name, version.version), spec.target, spec.task)
    path = artifacts.write_csv(selector.ranking_, "reports", name,
                                f"feature_ranking_v{version.version}.csv")
    context.log.info(f"Selected {len(selector.selected_features_)} of {len(selector.ranking_)} encoded features "
                     f"for {name}")
    return dg.MaterializeResult(metadata={
        "feature_set_version": version.version,
        "n_selected": len(selector.selected_features_),
        "n_candidates": len(selector.ranking_),
        "selected_features": ", ".join(selector.selected_features_),
        "ranking": markdown_table(selector.ranking_),
        "ranking_file": dg.MetadataValue.path(str(path)),
    })
