"""LIME explanations of single rows (the `lime` package), on the model's raw input columns.

LIME perturbs numeric arrays, so the rows are coded for it and decoded before the served pipeline sees them:
categorical (and boolean) columns become category codes that LIME samples as categories, datetimes become seconds
since the epoch, missing numbers the training median. A stability check repeats each explanation with other seeds and
reports how much the top features agree (the mean Jaccard overlap of the top-k sets): LIME's local samples are
random, and an explanation that changes with the seed says little.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from lime.lime_tabular import LimeTabularExplainer
from threadpoolctl import threadpool_limits


@dataclass(frozen=True)
class RowExplanation:
    row: object
    """The row's index label."""
    explained: str
    """e.g. 'probability of yes' or 'prediction'."""
    prediction: object
    weights: pd.DataFrame
    """condition (LIME's description, e.g. 'age <= 22.00'), feature, weight; largest |weight| first."""
    stability: float
    """Mean Jaccard overlap of the top features over the repeats with other seeds (1: always the same set)."""


class _Coder:
    """Input rows <-> the numeric arrays LIME perturbs."""

    def __init__(self, X: pd.DataFrame):
        self.columns = list(X.columns)
        self.categories: dict[str, list] = {}
        self.datetimes: set[str] = set()
        for column in self.columns:
            values = X[column]
            if pd.api.types.is_datetime64_any_dtype(values):
                self.datetimes.add(column)
            elif not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
                self.categories[column] = sorted(values.dropna().unique().tolist(), key=str) + [None]
        self.dtypes = X.dtypes
        self.medians = {c: float(self._numbers(X[c]).median()) for c in self.columns if c not in self.categories}

    def _numbers(self, values: pd.Series) -> pd.Series:
        if values.name in self.datetimes:
            return values.astype("int64").where(values.notna()) / 1e9
        return values.astype(float)

    def encode(self, X: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(X), len(self.columns)))
        for j, column in enumerate(self.columns):
            if column in self.categories:
                lookup = {value: code for code, value in enumerate(self.categories[column])}
                missing = len(self.categories[column]) - 1
                out[:, j] = [lookup.get(value, missing) if pd.notna(value) else missing for value in X[column]]
            else:
                out[:, j] = self._numbers(X[column]).fillna(self.medians[column]).to_numpy()
        return out

    def decode(self, array: np.ndarray) -> pd.DataFrame:
        frame = {}
        for j, column in enumerate(self.columns):
            if column in self.categories:
                codes = np.clip(np.rint(array[:, j]).astype(int), 0, len(self.categories[column]) - 1)
                frame[column] = pd.Series([self.categories[column][c] for c in codes], dtype=object)
            elif column in self.datetimes:
                frame[column] = pd.to_datetime(array[:, j], unit="s")
            else:
                frame[column] = pd.Series(array[:, j]).astype(self.dtypes[column]
                                                              if pd.api.types.is_float_dtype(self.dtypes[column])
                                                              else float)
        return pd.DataFrame(frame)


def explain_rows(model, background: pd.DataFrame, rows: pd.DataFrame, classifier: bool, positive_class=None,
                 features: int = 6, repeats: int = 3, samples: int = 1000, seed: int = 0) -> list[RowExplanation]:
    """LIME for each of `rows` against `background` (training rows), with the stability over `repeats` seeds."""
    columns = list(model.feature_names_in_)
    coder = _Coder(background[columns])
    training = coder.encode(background[columns])
    categorical = [j for j, c in enumerate(columns) if c in coder.categories]
    names = {j: [str(v) for v in coder.categories[c]] for j, c in enumerate(columns) if c in coder.categories}
    classes = list(model.classes_) if classifier else None
    label = 0
    if classifier:
        label = [str(c) for c in classes].index(str(positive_class)) if positive_class is not None else len(classes) - 1

    def predict(array: np.ndarray) -> np.ndarray:
        frame = coder.decode(array)
        return model.predict_proba(frame) if classifier else model.predict(frame)

    explained = f"probability of {classes[label]}" if classifier else "prediction"
    results = []
    with threadpool_limits(1):
        for index, row in zip(rows.index, coder.encode(rows[columns]), strict=True):
            runs = []
            for repeat in range(repeats):
                explainer = LimeTabularExplainer(training, mode="classification" if classifier else "regression",
                                                 feature_names=columns, categorical_features=categorical,
                                                 categorical_names=names, discretize_continuous=True,
                                                 random_state=seed + repeat)
                explanation = explainer.explain_instance(row, predict, num_features=features, num_samples=samples,
                                                         labels=(label,) if classifier else None)
                runs.append(explanation)
            weights = runs[0].as_list(label=label) if classifier else runs[0].as_list()
            ids = runs[0].as_map()[label if classifier else 1]
            table = pd.DataFrame({"condition": [c for c, _ in weights], "feature": [columns[i] for i, _ in ids],
                                  "weight": [w for _, w in weights]})
            tops = [{i for i, _ in run.as_map()[label if classifier else 1]} for run in runs]
            overlap = [len(tops[0] & other) / len(tops[0] | other) for other in tops[1:]]
            prediction = model.predict(rows.loc[[index], columns])[0]
            results.append(RowExplanation(index, explained, prediction, table,
                                          float(np.mean(overlap)) if overlap else 1.0))
    return results
