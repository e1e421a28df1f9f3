"""Small helpers that turn engine results into Dagster metadata and failures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pandas as pd

from tmiv_assets.ml.data.ingest import DataValidationError
from tmiv_assets.ml.data.spec import SpecError
from tmiv_assets.ml.plots import figure_to_markdown


def column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(str(c), str(t)) for c, t in frame.dtypes.items()])


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> dg.MetadataValue:
    """`frame` as a Markdown table; a missing value (a CV-only row's test score) shows as a dash, not `nan`."""
    shown = frame.astype(object).where(frame.notna(), None)
    return dg.MetadataValue.md(shown.to_markdown(index=False, floatfmt=f".{digits}g", missingval="–"))


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


@contextmanager
def engine_errors_as_failure(partition: str, what: str) -> Iterator[None]:
    """The engine's ValueError (a search that cannot run on this data) as a `dg.Failure` naming the partition."""
    try:
        yield
    except ValueError as error:
        raise dg.Failure(description=f"[{partition}] {what}: {error}") from error


def figures_markdown(figures: dict) -> str:
    """Several named figures as one Markdown block of embedded PNGs, each under its name."""
    return "\n\n".join(f"**{name.replace('_', ' ')}**\n\n{figure_to_markdown(figure, name)}"
                       for name, figure in figures.items())
