"""The feature store: immutable Parquet versions catalogued in a DuckDB table."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from tmiv_assets.ml.spec import validate_name
from tmiv_assets.resources.files import atomic_path, confined

CATALOG_DDL = """
CREATE TABLE IF NOT EXISTS feature_sets (
    name VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    path VARCHAR NOT NULL,
    schema JSON NOT NULL,
    row_count BIGINT NOT NULL,
    content_hash VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    lineage JSON NOT NULL,
    PRIMARY KEY (name, dataset, version)
)
"""
LOCK_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class StoredVersion:
    """One catalog row: an immutable, content-addressed version of a stored frame."""

    name: str
    dataset: str
    version: int
    path: Path
    row_count: int
    content_hash: str
    created: bool
    """False when identical content already existed and no new version was written."""


def content_hash(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


class FeatureStore(dg.ConfigurableResource):
    """Versioned frames under `<home>/feature_store`: Parquet files plus the `feature_sets` catalog."""

    home: str

    @property
    def root(self) -> Path:
        return Path(self.home).resolve() / "feature_store"

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.duckdb"

    def save(self, name: str, dataset: str, frame: pd.DataFrame, lineage: dict) -> StoredVersion:
        """Store `frame` as the next version of (name, dataset) unless the latest has the same content."""
        validate_name(name, "feature set")
        validate_name(dataset)
        digest = content_hash(frame)
        latest = self.latest(name, dataset)
        if latest is not None and latest.content_hash == digest:
            return StoredVersion(**{**latest.__dict__, "created": False})
        version = 1 if latest is None else latest.version + 1
        path = confined(self.root, name, dataset, f"v{version:04d}.parquet")
        with atomic_path(path) as temporary:
            frame.to_parquet(temporary, index=False)
        schema = json.dumps([{"name": str(c), "type": str(t)} for c, t in frame.dtypes.items()])
        row = [name, dataset, version, str(path), schema, len(frame), digest,
               datetime.now(timezone.utc).replace(tzinfo=None), json.dumps(lineage, default=str)]
        try:
            with self._connect() as connection:
                connection.execute("INSERT INTO feature_sets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        except duckdb.Error:
            path.unlink(missing_ok=True)  # no file without its catalog row
            raise
        return StoredVersion(name, dataset, version, path, len(frame), digest, created=True)

    def latest(self, name: str, dataset: str) -> StoredVersion | None:
        versions = self.versions(name, dataset)
        if versions.empty:
            return None
        row = versions.iloc[-1]
        return StoredVersion(name, dataset, int(row["version"]), Path(row["path"]), int(row["row_count"]),
                             row["content_hash"], created=False)

    def versions(self, name: str, dataset: str) -> pd.DataFrame:
        """Catalog rows of (name, dataset), oldest first."""
        if not self.catalog_path.exists():
            return pd.DataFrame(columns=["version", "path", "row_count", "content_hash", "created_at", "lineage"])
        with self._connect(read_only=True) as connection:
            return connection.execute(
                "SELECT version, path, row_count, content_hash, created_at, lineage FROM feature_sets "
                "WHERE name = ? AND dataset = ? ORDER BY version",
                [name, dataset],
            ).df()

    def load(self, name: str, dataset: str, version: int | str = "latest") -> pd.DataFrame:
        """Read one version back; 'latest' is the newest."""
        versions = self.versions(name, dataset)
        if versions.empty:
            raise LookupError(f"no stored '{name}' for dataset '{dataset}'; materialize {name} first")
        if version == "latest":
            row = versions.iloc[-1]
        else:
            matching = versions[versions["version"] == int(version)]
            if matching.empty:
                raise LookupError(f"'{name}' for '{dataset}' has no version {version}: {versions['version'].tolist()}")
            row = matching.iloc[0]
        return pd.read_parquet(row["path"])

    def artifact_path(self, *parts: str) -> Path:
        """A path for reports and batch outputs, confined to the state directory."""
        return confined(Path(self.home).resolve(), *parts)

    def _connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        while True:
            try:
                connection = duckdb.connect(str(self.catalog_path), read_only=read_only and self.catalog_path.exists())
                break
            except duckdb.IOException as error:
                # Another process holds DuckDB's file lock for a moment; wait for it rather than fail.
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        if not read_only:
            connection.execute(CATALOG_DDL)
        return connection
