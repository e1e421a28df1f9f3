"""Unversioned outputs a person opens directly: HTML reports, scored batches, forecasts, rankings.

Versioned frames that other assets read go through the FeatureStore; these files are written for people
and tools outside the platform, atomically, and no asset parses them back.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from tmiv_assets.resources.files import atomic_path, confined, spreadsheet_safe


class ArtifactStore(dg.ConfigurableResource):
    """Files under `<home>/<kind>/...`, confined to the state directory."""

    home: str

    def path(self, *parts: str) -> Path:
        return confined(Path(self.home).resolve(), *parts)

    def write_text(self, text: str, *parts: str) -> Path:
        target = self.path(*parts)
        with atomic_path(target) as temporary:
            temporary.write_text(text)
        return target

    def write_frame(self, frame: pd.DataFrame, *parts: str) -> Path:
        target = self.path(*parts)
        with atomic_path(target) as temporary:
            frame.to_parquet(temporary, index=False)
        return target

    def write_csv(self, frame: pd.DataFrame, *parts: str) -> Path:
        """A table for people: cells that a spreadsheet would run as formulas are escaped."""
        return self.write_text(spreadsheet_safe(frame).to_csv(index=False), *parts)
