"""Where data arrives: dataset and series specs, incoming batches and their late labels."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pandas as pd

from tmiv_assets.ml.ingest import read_table
from tmiv_assets.ml.spec import DatasetSpec, SeriesSpec, load_dataset_spec, load_series_spec, validate_name

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

    def arrived_labels(self, dataset: str) -> pd.DataFrame:
        """All labels that have arrived for the dataset's batches, with the day they belong to."""
        frames = [
            read_table(self.labels_path(dataset, day)).assign(batch_day=day)
            for day in self.batch_days(dataset)
            if self.labels_path(dataset, day).exists()
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
