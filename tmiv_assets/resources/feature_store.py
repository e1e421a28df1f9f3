"""The feature store: immutable Parquet versions catalogued in a DuckDB table.

Writers hold the DuckDB catalog file only for one short transaction, one writer at a time under an OS
lock (`catalog.lock`) that the kernel frees if the writer dies. Readers never open it: every commit also
publishes the catalog as `catalog.parquet` (temporary file + rename), which readers query with an
in-memory DuckDB, so a reader is never blocked by a writer's file lock. A commit is bracketed by the
marker `catalog.publishing`: while it exists the snapshot may be older than the catalog (a writer was
killed between commit and publish), and the next reader or writer publishes again before going on.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tmiv_assets.ml.data.spec import validate_name
from tmiv_assets.resources.files import (
    atomic_path,
    check_storable,
    confined,
    content_hash,
    frame_schema,
    process_lock,
    read_parquet_frame,
    temporary_beside,
    write_parquet_hashed,
)

__all__ = ["FeatureStore", "SchemaDiff", "StoredVersion", "content_hash"]

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
);
ALTER TABLE feature_sets ADD COLUMN IF NOT EXISTS code_version VARCHAR;
"""
CATALOG_COLUMNS = ["name", "dataset", "version", "path", "schema", "row_count", "content_hash", "created_at",
                   "lineage", "code_version"]
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


@dataclass(frozen=True)
class SchemaDiff:
    """How the columns of two versions of a feature set differ."""

    added: tuple[str, ...]
    """Columns only in the newer version."""
    removed: tuple[str, ...]
    """Columns only in the older version."""
    type_changed: tuple[tuple[str, str, str], ...]
    """(column, old dtype, new dtype) for columns in both with a different dtype."""

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.type_changed)


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the engine sources, so a catalog row says which transform code produced it."""
    digest = hashlib.sha256()
    engine = Path(__file__).resolve().parents[1] / "ml"
    for source in sorted(engine.rglob("*.py")):
        digest.update(str(source.relative_to(engine)).encode() + source.read_bytes())
    return digest.hexdigest()[:12]


class FeatureStore(dg.ConfigurableResource):
    """Versioned frames under `<home>/feature_store`: Parquet files plus the `feature_sets` catalog."""

    home: str

    @property
    def root(self) -> Path:
        return Path(self.home).resolve() / "feature_store"

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.duckdb"

    @property
    def catalog_snapshot_path(self) -> Path:
        return self.root / "catalog.parquet"

    @property
    def publishing_marker(self) -> Path:
        return self.root / "catalog.publishing"

    def save(self, name: str, dataset: str, frame: pd.DataFrame, lineage: dict) -> StoredVersion:
        """Store `frame` as the next version of (name, dataset) unless the latest has the same content.

        The Parquet file is written under a temporary name first; it gets its final name and its catalog
        row in one transaction, so a failure at any point leaves earlier versions and rows as they were.
        """
        validate_name(name, "feature set")
        validate_name(dataset)
        check_storable(frame, f"{name} for dataset '{dataset}'")
        directory = confined(self.root, name, dataset)
        lineage_json = json.dumps(lineage, default=str)
        with temporary_beside(directory / "pending.parquet") as temporary:
            digest = write_parquet_hashed(frame, temporary)
            with self._writer() as connection:
                connection.execute("BEGIN TRANSACTION")
                try:
                    latest = self._latest_row(connection, name, dataset)
                    # Same content described by another spec (e.g. a new positive_class) is a new version.
                    spec = json.loads(lineage_json).get("spec")
                    if latest is not None and latest[2] == digest and latest[3].get("spec") == spec:
                        connection.execute("ROLLBACK")
                        return StoredVersion(name, dataset, latest[0], Path(latest[1]), frame.shape[0], digest,
                                             created=False)
                    version = 1 if latest is None else latest[0] + 1
                    path = confined(directory, f"v{version:04d}.parquet")
                    row = [name, dataset, version, str(path), json.dumps(frame_schema(frame)), len(frame), digest,
                           datetime.now(UTC).replace(tzinfo=None), lineage_json, code_version()]
                    connection.execute(f"INSERT INTO feature_sets ({', '.join(CATALOG_COLUMNS)}) "
                                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                    temporary.replace(path)
                    self.publishing_marker.touch()
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    if "path" in locals():
                        path.unlink(missing_ok=True)  # no file without its catalog row
                    raise
                # Still holding the writer lock, so no other commit can slip in before this snapshot.
                self._publish_snapshot(connection)
        return StoredVersion(name, dataset, version, path, len(frame), digest, created=True)

    def latest(self, name: str, dataset: str) -> StoredVersion | None:
        versions = self.versions(name, dataset)
        return None if versions.empty else _stored(name, dataset, versions.iloc[-1])

    def version(self, name: str, dataset: str, version: int | str) -> StoredVersion:
        return _stored(name, dataset, self._version_row(name, dataset, version))

    def versions(self, name: str, dataset: str) -> pd.DataFrame:
        """Catalog rows of (name, dataset), oldest first."""
        return self._query_catalog(
            "SELECT version, path, row_count, content_hash, created_at, lineage, schema, code_version "
            "FROM catalog WHERE name = ? AND dataset = ? ORDER BY version",
            [name, dataset],
        )

    def feature_sets(self) -> pd.DataFrame:
        """Every stored (name, dataset) with its number of versions and the newest one."""
        return self._query_catalog(
            "SELECT name, dataset, count(*) AS versions, max(version) AS latest_version, "
            "max(created_at) AS latest_created_at FROM catalog GROUP BY name, dataset ORDER BY name, dataset",
            [],
        )

    def load(self, name: str, dataset: str, version: int | str = "latest") -> pd.DataFrame:
        """Read one version back; 'latest' is the newest."""
        row = self._version_row(name, dataset, version)
        return read_parquet_frame(Path(row["path"]), json.loads(row["schema"]))

    def schema(self, name: str, dataset: str, version: int | str = "latest") -> dict[str, str]:
        """Column -> pandas dtype of one version, without reading its data."""
        return {c["name"]: c["type"] for c in json.loads(self._version_row(name, dataset, version)["schema"])}

    def diff_schemas(self, name: str, dataset: str, old: int | str, new: int | str = "latest") -> SchemaDiff:
        """Columns added, removed and retyped between two versions."""
        before, after = self.schema(name, dataset, old), self.schema(name, dataset, new)
        return SchemaDiff(
            added=tuple(c for c in after if c not in before),
            removed=tuple(c for c in before if c not in after),
            type_changed=tuple((c, before[c], after[c]) for c in before if c in after and before[c] != after[c]),
        )

    def lineage(self, name: str, dataset: str, version: int | str = "latest") -> dict:
        """What a version was made from (input versions, the dataset spec, parameters), as saved with it."""
        return json.loads(self._version_row(name, dataset, version)["lineage"])

    def _version_row(self, name: str, dataset: str, version: int | str) -> pd.Series:
        validate_name(name, "feature set")
        validate_name(dataset)
        versions = self.versions(name, dataset)
        if versions.empty:
            raise LookupError(f"no stored '{name}' for dataset '{dataset}'; materialize {name} first")
        if version == "latest":
            return versions.iloc[-1]
        matching = versions[versions["version"] == int(version)]
        if matching.empty:
            raise LookupError(f"'{name}' for '{dataset}' has no version {version}: {versions['version'].tolist()}")
        return matching.iloc[0]

    def _query_catalog(self, sql: str, parameters: list) -> pd.DataFrame:
        if self.catalog_path.exists() and (self.publishing_marker.exists() or not self.catalog_snapshot_path.exists()):
            # A writer may be between commit and publish, or was killed there: wait for the lock, then
            # publish again if it is still needed, so no reader sees a snapshot older than the catalog.
            with self._writer():
                pass
        with duckdb.connect() as connection:
            if self.catalog_snapshot_path.exists():
                # One read of the whole (small) file: a publish may replace it at any moment, and a scan that
                # opened it twice could pair the old footer with the new file.
                snapshot = pq.read_table(pa.BufferReader(self.catalog_snapshot_path.read_bytes()))
                connection.register("catalog", snapshot)
            else:
                connection.execute(CATALOG_DDL)
                connection.execute("CREATE VIEW catalog AS SELECT * FROM feature_sets")
            return connection.execute(sql, parameters).df()

    @staticmethod
    def _latest_row(connection: duckdb.DuckDBPyConnection, name: str, dataset: str) -> tuple | None:
        row = connection.execute(
            "SELECT version, path, content_hash, lineage FROM feature_sets WHERE name = ? AND dataset = ? "
            "ORDER BY version DESC LIMIT 1", [name, dataset]).fetchone()
        return None if row is None else (*row[:3], json.loads(row[3]))

    def _publish_snapshot(self, connection: duckdb.DuckDBPyConnection) -> None:
        with atomic_path(self.catalog_snapshot_path) as temporary:
            connection.execute(f"COPY (SELECT * FROM feature_sets ORDER BY name, dataset, version) "
                               f"TO '{_sql_literal(temporary)}' (FORMAT parquet)")
        self.publishing_marker.unlink(missing_ok=True)

    @contextmanager
    def _writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The single writer: the catalog lock, then the DuckDB file; first repairs a publish a killed writer
        left undone."""
        with process_lock(self.root / "catalog.lock", "feature store catalog"), self._connect() as connection:
            if self.publishing_marker.exists() or not self.catalog_snapshot_path.exists():
                self._publish_snapshot(connection)
            yield connection

    def _connect(self) -> duckdb.DuckDBPyConnection:
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        while True:
            try:
                connection = duckdb.connect(str(self.catalog_path))
                break
            except duckdb.IOException as error:
                # Another process (e.g. a duckdb shell) holds DuckDB's file lock for a moment; wait for it.
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        connection.execute(CATALOG_DDL)
        return connection


def _stored(name: str, dataset: str, row: pd.Series) -> StoredVersion:
    return StoredVersion(name, dataset, int(row["version"]), Path(row["path"]), int(row["row_count"]),
                         row["content_hash"], created=False)


def _sql_literal(path: Path) -> str:
    return str(path).replace("'", "''")
