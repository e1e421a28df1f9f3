"""tmiv_assets: an AutoML and MLOps platform as a Dagster project."""

import warnings

# Beta APIs used knowingly (dagster-mlflow's MlFlow resource and run hooks, MultiToSingleDimensionPartitionMapping),
# pinned with dagster in constraints.txt: their warnings would repeat in every step process.
warnings.filterwarnings("ignore", message=r".* is currently in beta", module=r"(dagster|dagster_mlflow|tmiv_assets)\b")
