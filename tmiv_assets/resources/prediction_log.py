"""The prediction log: every prediction the platform served, in a DuckDB table beside the feature store.

One row per predicted row: request id, entity id, model name and version, A/B arm, prediction, probability,
partition, timestamp. Logging a partition again replaces its rows in one transaction, so re-materializing a
batch never duplicates them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from tmiv_assets.resources.files import process_lock

LOG_DDL = """
CREATE TABLE IF NOT EXISTS prediction_log (
    request_id VARCHAR NOT NULL,
    entity_id VARCHAR,
    model_name VARCHAR NOT NULL,
    model_version INTEGER NOT NULL,
    arm VARCHAR,
    prediction VARCHAR NOT NULL,
    probability DOUBLE,
    partition VARCHAR NOT NULL,
    logged_at TIMESTAMP NOT NULL
)
"""


class PredictionLog(dg.ConfigurableResource):
    """`<home>/prediction_log.duckdb`, written under its own OS lock (freed by the kernel if a writer dies)."""

    home: str

    @property
    def path(self) -> Path:
        return Path(self.home).resolve() / "prediction_log.duckdb"

    def record(self, partition: str, model_name: str, model_version: int | pd.Series, predictions: pd.Series,
               probabilities: pd.Series | None = None, entity_ids: pd.Series | None = None,
               arm: str | pd.Series | None = None) -> str:
        """Replace the partition's rows with these predictions (version and arm per row or for all); returns
        the request id."""
        request_id = str(uuid.uuid4())
        rows = pd.DataFrame({
            "request_id": request_id,
            "entity_id": None if entity_ids is None else entity_ids.astype(str).to_numpy(),
            "model_name": model_name,
            "model_version": model_version.astype(int).to_numpy() if isinstance(model_version, pd.Series)
            else int(model_version),
            "arm": arm.to_numpy() if isinstance(arm, pd.Series) else arm,
            "prediction": predictions.astype(str).to_numpy(),
            "probability": None if probabilities is None else probabilities.astype(float).to_numpy(),
            "partition": partition, "logged_at": datetime.now(UTC).replace(tzinfo=None)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with process_lock(self.path.with_suffix(".lock"), "prediction log"), duckdb.connect(str(self.path)) as db:
            db.execute(LOG_DDL)
            db.execute("BEGIN TRANSACTION")
            db.execute("DELETE FROM prediction_log WHERE partition = ?", [partition])
            db.register("new_rows", rows)
            db.execute("INSERT INTO prediction_log SELECT * FROM new_rows")
            db.execute("COMMIT")
        return request_id

    def rows(self, partition: str | None = None) -> pd.DataFrame:
        """Logged rows, of one partition or all."""
        if not self.path.exists():
            return pd.DataFrame(columns=["request_id", "entity_id", "model_name", "model_version", "arm",
                                         "prediction", "probability", "partition", "logged_at"])
        with process_lock(self.path.with_suffix(".lock"), "prediction log"), \
                duckdb.connect(str(self.path), read_only=True) as db:
            where = "WHERE partition = ?" if partition else ""
            return db.execute(f"SELECT * FROM prediction_log {where} ORDER BY logged_at, entity_id",
                              [partition] if partition else []).df()

    def scored_days(self, dataset: str) -> dict[str, datetime]:
        """{day: when it was scored} for every batch of `dataset` in the log."""
        if not self.path.exists():
            return {}
        with process_lock(self.path.with_suffix(".lock"), "prediction log"), \
                duckdb.connect(str(self.path), read_only=True) as db:
            rows = db.execute("SELECT partition, min(logged_at) FROM prediction_log WHERE partition LIKE ? "
                              "GROUP BY partition", [f"{dataset}|%"]).fetchall()
        return {partition.split("|", 1)[1]: logged_at for partition, logged_at in rows}
