"""Small helpers that turn engine results into Dagster metadata and failures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pandas as pd

from tmiv_assets.ml.ingest import DataValidationError
from tmiv_assets.ml.spec import SpecError


def column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(str(c), str(t)) for c, t in frame.dtypes.items()])


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=f".{digits}g"))


@contextmanager
def bad_input_as_failure(partition: str) -> Iterator[None]:
    """Turn the engine's input errors into a `dg.Failure` that names the file, column and fix."""
    try:
        yield
    except DataValidationError as error:
        raise dg.Failure(
            description=f"[{partition}] {error}",
            metadata={"file": str(error.path), "column": error.column or ""},
        ) from error
    except SpecError as error:
        raise dg.Failure(description=f"[{partition}] {error}") from error
