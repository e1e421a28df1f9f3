"""Engineered feature sets, versioned in the feature store."""

import dagster as dg

from tmiv_assets.defs.assets.datasets import clean_dataset, stored_version_metadata
from tmiv_assets.defs.metadata import bad_input_as_failure, column_schema, markdown_table
from tmiv_assets.defs.partitions import dataset_partitions
from tmiv_assets.ml.features import FeatureBuilder
from tmiv_assets.resources.data_source import DataSource
from tmiv_assets.resources.feature_store import FeatureStore


@dg.asset(partitions_def=dataset_partitions, deps=[clean_dataset], pool="duckdb_writer", group_name="features",
          kinds={"duckdb", "parquet"})
def feature_set(context: dg.AssetExecutionContext, source: DataSource, store: FeatureStore) -> dg.MaterializeResult:
    """Model inputs plus the target: identifiers dropped, the time column expanded into calendar features."""
    name = context.partition_key
    clean = store.load("clean_dataset", name)
    with bad_input_as_failure(name):
        spec = source.dataset_spec(name)
    builder = FeatureBuilder.from_spec(spec).fit(clean.drop(columns=[spec.target]))
    features = builder.transform(clean)
    lineage = {
        "clean_dataset_version": store.latest("clean_dataset", name).version,
        "transform": type(builder).__name__,
        "transform_params": builder.get_params(),
    }
    version = store.save("feature_set", name, features, lineage)
    generated = sorted(set(features.columns) - set(clean.columns))
    context.log.info(f"{features.shape[1] - 1} features for {name}, {len(generated)} generated")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(features),
        "dagster/column_schema": column_schema(features),
        "n_features": features.shape[1] - 1,
        "generated_features": ", ".join(generated) or "none",
        "preview": markdown_table(features.head(5)),
        **stored_version_metadata(version),
    })
