"""Where data arrives: dataset and series specs, incoming batches and their late labels."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from tmiv_assets.ml.data.ingest import read_dataset, read_series_frame, read_table
from tmiv_assets.ml.data.spec import DatasetSpec, SeriesSpec, load_dataset_spec, load_series_spec, validate_name

_DAY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.parquet$")


class DataSource(dg.ConfigurableResource):
    """The data folder: `datasets/<name>.yaml` + data file, `series/<name>.yaml` + CSV,
    `incoming/<dataset>/<YYYY-MM-DD>.parquet` batches and `incoming/<dataset>/labels/<day>.parquet`."""

    data_dir: str

    @property
    def root(self) -> Path:
        return Path(self.data_dir).resolve()

    def dataset_spec(self, name: str) -> DatasetSpec:
        return load_dataset_spec(self.root / "datasets" / f"{validate_name(name)}.yaml")

    def series_spec(self, name: str) -> SeriesSpec:
        return load_series_spec(self.root / "series" / f"{validate_name(name, 'series')}.yaml")

    def spec_files(self, kind: str) -> dict[str, Path]:
        """Spec files of 'datasets' or 'series' by name."""
        return {path.stem: path for path in sorted((self.root / kind).glob("*.yaml"))}

    def batch_path(self, dataset: str, day: str) -> Path:
        return self.root / "incoming" / validate_name(dataset) / f"{day}.parquet"

    def labels_path(self, dataset: str, day: str) -> Path:
        return self.root / "incoming" / validate_name(dataset) / "labels" / f"{day}.parquet"

    def batch_days(self, dataset: str) -> list[str]:
        folder = self.root / "incoming" / validate_name(dataset)
        return sorted(p.stem for p in folder.glob("*.parquet") if _DAY_FILE.match(p.name))

    def read_dataset(self, spec: DatasetSpec) -> pd.DataFrame:
        return read_dataset(spec)

    def read_series_frame(self, spec: SeriesSpec) -> pd.DataFrame:
        """y and the regressors by date; see ingest.read_series_frame."""
        return read_series_frame(spec)

    def read_batch(self, dataset: str, day: str) -> pd.DataFrame:
        return read_table(self.batch_path(dataset, day))

    def read_labels(self, dataset: str, day: str) -> pd.DataFrame | None:
        """The labels that arrived for one day's batch, or None while they have not."""
        path = self.labels_path(dataset, day)
        return read_table(path) if path.exists() else None

    def label_count(self, dataset: str, day: str) -> int:
        """How many labels arrived for a day, from the Parquet footer (no rows read; sensors ask every tick)."""
        path = self.labels_path(dataset, day)
        return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0

    def labelled_batches(self, dataset: str, days: Iterable[str] | None = None
                         ) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
        """{day: (batch, labels)} for every batch (of `days`, if given) whose labels have arrived."""
        wanted = self.batch_days(dataset) if days is None else sorted(set(days) & set(self.batch_days(dataset)))
        return {day: (self.read_batch(dataset, day), labels) for day in wanted
                if (labels := self.read_labels(dataset, day)) is not None}

    def labelled_days(self, dataset: str) -> list[str]:
        """Days whose batch and labels have both arrived."""
        return [day for day in self.batch_days(dataset) if self.labels_path(dataset, day).exists()]
