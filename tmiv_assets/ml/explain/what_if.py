"""What-if analysis of a fitted pipeline on its raw input columns.

Partial dependence and ICE curves come from scikit-learn's inspection module for the most influential columns.
Counterfactuals are our own search, because what is asked is the fewest changed columns (DiCE's samplers optimise
proximity and diversity, not the count): breadth first over one, then two, then up to `max_changes` changed
columns, each set to a value seen in the training rows (numeric: quantiles between the observed minimum and
maximum; categorical: the most frequent categories); at each depth every single extra change of the best `beam`
candidates is scored in one batch, and the closest candidate that reaches the goal (in units of each column's
interquartile range, a changed category counting 1) wins. Every counterfactual is checked by predicting it again;
a row for which none is found says so.

Goals: a misclassified row is flipped to its actual class, and for binary tasks a rejected row (predicted the
negative class) to the positive class. A regression row predicted below the median of the training rows'
predictions is raised to at least that median.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.inspection import PartialDependenceDisplay

from tmiv_assets.ml.metrics import resolve_positive_class
from tmiv_assets.ml.monitoring.settings import SpecSettings

NUMERIC_POINTS = 11  # candidate values per numeric column: its 0, 10, ..., 100th percentiles
MAX_CATEGORIES = 12
BEAM = 5
ICE_ROWS = 50
# Rows each partial-dependence point averages over: every grid point predicts all of them, and the average of a
# thousand rows moves by well under the curve's line width.
DEPENDENCE_ROWS = 1000


@dataclass(frozen=True)
class WhatIfSettings(SpecSettings):
    """What the what-if analysis may change; every field can be set in the dataset spec's `what_if`."""

    KIND = "what_if"

    immutable_columns: tuple[str, ...] = ()
    """Columns a counterfactual must not change, beside the sensitive, id and time columns (which it never does)."""
    max_changes: int = 3
    """At most this many columns changed in one counterfactual."""
    features: int = 4
    """Columns with partial dependence and ICE curves, the most influential first."""

    def __post_init__(self):
        columns = self.immutable_columns
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise ValueError(f"what_if immutable_columns must be a list of column names, got {columns!r}")
        object.__setattr__(self, "immutable_columns", tuple(columns))
        for name in ("max_changes", "features"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
                raise ValueError(f"what_if {name} must be a whole number from 1 to 10, got {value!r}")


@dataclass(frozen=True)
class WhatIfReport:
    figure: plt.Figure
    """Partial dependence (and ICE curves for numeric columns) of the explained output."""
    curves: pd.DataFrame
    """Columns: feature, value, average (the partial dependence)."""
    counterfactuals: pd.DataFrame
    """One row per analysed row: row, reason, goal, found, changes, prediction, new_prediction, new_score."""
    changed_rows: pd.DataFrame
    """The counterfactual inputs themselves, indexed by the row they change."""
    explained: str


def analyse(model, rows: pd.DataFrame, y: pd.Series, reference: pd.DataFrame, task: str, positive_class,
            features: list[str], frozen: list[str], settings: WhatIfSettings, each: int = 3) -> WhatIfReport:
    """PDP/ICE of `features` on `reference` and counterfactuals for a few of `rows` (held-out rows with their
    actual values `y`), changing only columns the model reads that are not `frozen`."""
    columns = list(model.feature_names_in_)
    classifier = task != "regression"
    figure, curves, explained = _partial_dependence(model, reference[columns], features, classifier, positive_class)
    actionable = [c for c in columns if c not in set(frozen)]
    candidates = candidate_values(reference, actionable)
    scale = {c: _spread(reference[c]) for c in actionable}
    found, changed = [], []
    for label, reason, goal in _goals(model, rows[columns], y, reference[columns], classifier, positive_class, each):
        record, counterfactual = _search(model, rows.loc[[label], columns], goal, candidates, scale,
                                         settings.max_changes)
        found.append({"row": label, "reason": reason, "goal": goal.describe, **record})
        if counterfactual is not None:
            changed.append(counterfactual.set_axis([label]))
    changed_rows = pd.concat(changed) if changed else rows.iloc[:0][columns]
    return WhatIfReport(figure, curves, pd.DataFrame(found), changed_rows, explained)


def candidate_values(reference: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """Values a counterfactual may give each column: what the training rows show, nothing outside it."""
    values = {}
    for column in columns:
        observed = reference[column].dropna()
        if observed.empty:
            continue
        if pd.api.types.is_numeric_dtype(observed) and not pd.api.types.is_bool_dtype(observed):
            points = np.unique(np.quantile(observed, np.linspace(0, 1, NUMERIC_POINTS)))
            values[column] = np.unique(np.round(points)).astype(observed.dtype) if (
                pd.api.types.is_integer_dtype(observed)) else points
        else:
            values[column] = observed.value_counts().index[:MAX_CATEGORIES].to_numpy()
    return values


@dataclass(frozen=True)
class _Goal:
    describe: str
    reached: object  # (model, frame) -> bool array
    progress: object  # (model, frame) -> float array, higher is closer


def _goals(model, rows: pd.DataFrame, y: pd.Series, reference: pd.DataFrame, classifier: bool, positive_class,
           each: int):
    """(row label, why it was chosen, its goal) for misclassified and rejected rows, or low regression rows."""
    if not classifier:
        predicted = pd.Series(model.predict(rows), index=rows.index)
        threshold = float(np.median(model.predict(reference)))
        low = predicted[predicted < threshold].sort_values(kind="stable").index[:each]
        goal = _Goal(f"prediction >= {threshold:.4g} (the median prediction)",
                     lambda m, f: m.predict(f) >= threshold, lambda m, f: m.predict(f))
        for label in low:
            yield label, f"predicted {predicted[label]:.4g}, below the median", goal
        return
    classes = list(model.classes_)
    proba = pd.DataFrame(model.predict_proba(rows), index=rows.index, columns=range(len(classes)))
    predicted = proba.idxmax(axis=1)
    actual = y.map({c: k for k, c in enumerate(classes)} | {str(c): k for k, c in enumerate(classes)})
    wrong = predicted[actual != predicted].index
    confident = proba.max(axis=1)[wrong].sort_values(ascending=False, kind="stable").index[:each]
    chosen = [(label, "misclassified", int(actual[label])) for label in confident]
    if len(classes) == 2:
        positive = classes.index(resolve_positive_class(model.classes_, positive_class))
        rejected = proba[positive][(predicted != positive) & ~proba.index.isin(confident)].sort_values(kind="stable")
        picks = [rejected.index[int(q * (len(rejected) - 1))] for q in np.linspace(0.25, 0.75, each)] if len(
            rejected) else []
        chosen += [(label, "rejected", positive) for label in dict.fromkeys(picks)]
    for label, reason, target in chosen:
        name = classes[target]
        yield label, f"{reason}: predicted {classes[predicted[label]]!r}", _Goal(
            f"predicted class {name!r}",
            lambda m, f, name=name: np.asarray(m.predict(f)).astype(str) == str(name),
            lambda m, f, target=target: m.predict_proba(f)[:, target])


def _search(model, row: pd.DataFrame, goal: _Goal, candidates: dict[str, np.ndarray], scale: dict[str, float],
            max_changes: int) -> tuple[dict, pd.DataFrame | None]:
    """The fewest changes (then the closest) that reach the goal, verified by predicting the changed row."""
    original = row.iloc[0]
    states: list[dict] = [{}]
    for _ in range(max_changes):
        expansions = list({tuple(sorted((changes | {c: v}).items(), key=lambda kv: kv[0])): changes | {c: v}
                           for changes in states for c, values in candidates.items() if c not in changes
                           for v in values if not _same(v, original[c])}.values())
        if not expansions:
            break
        frame = _apply(row, expansions)
        reached = goal.reached(model, frame)
        if reached.any():
            distance = np.array([sum(_distance(original[c], v, scale[c]) for c, v in changes.items())
                                 for changes in expansions])
            best = int(np.flatnonzero(reached)[np.argmin(distance[reached])])
            verified = frame.iloc[[best]]
            if not goal.reached(model, verified)[0]:  # predicted once more on its own
                raise AssertionError("a counterfactual that reached its goal in a batch did not on its own")
            return {"found": True, "changes": "; ".join(f"{c}: {_shown(original[c])} -> {_shown(v)}"
                                                        for c, v in expansions[best].items()),
                    "prediction": model.predict(row)[0], "new_prediction": model.predict(verified)[0],
                    "new_score": float(goal.progress(model, verified)[0])}, verified
        order = np.argsort(-goal.progress(model, frame), kind="stable")[:BEAM]
        states = [expansions[i] for i in order]
    return {"found": False, "changes": f"none found within the training rows' ranges and {max_changes} changes",
            "prediction": model.predict(row)[0], "new_prediction": None, "new_score": None}, None


def _apply(row: pd.DataFrame, expansions: list[dict]) -> pd.DataFrame:
    frame = pd.concat([row] * len(expansions), ignore_index=True)
    for column in {c for changes in expansions for c in changes}:
        changed = [i for i, changes in enumerate(expansions) if column in changes]
        values = frame[column].astype(object)
        values.iloc[changed] = [expansions[i][column] for i in changed]
        dtype = row[column].dtype  # an integer column may take a float quantile; other types keep their own
        keep = pd.api.types.is_float_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype)
        frame[column] = values.astype(dtype) if keep else values.infer_objects()
    return frame


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float | np.floating) else str(value)


def _same(value, current) -> bool:
    return (pd.isna(value) and pd.isna(current)) or (not pd.isna(current) and value == current)


def _distance(before, after, spread: float) -> float:
    if isinstance(after, (int, float, np.number)) and not isinstance(after, bool) and not pd.isna(before):
        return abs(float(after) - float(before)) / spread
    return 1.0


def _spread(values: pd.Series) -> float:
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return 1.0
    q1, q3 = values.quantile([0.25, 0.75])
    return float(q3 - q1) or float(values.std()) or 1.0


def _partial_dependence(model, reference: pd.DataFrame, features: list[str], classifier: bool,
                        positive_class) -> tuple[plt.Figure, pd.DataFrame, str]:
    categorical = [c for c in features if not pd.api.types.is_numeric_dtype(reference[c])
                   or pd.api.types.is_bool_dtype(reference[c])]
    numeric = [c for c in features if c not in categorical]
    rows = reference.dropna(subset=numeric)  # the grid and each ICE curve need the plotted value
    rows = rows.sample(min(len(rows), DEPENDENCE_ROWS), random_state=0)
    # scikit-learn refuses integer columns (its grid would be rounded): plot them as floats
    rows = rows.astype({c: float for c in numeric if pd.api.types.is_integer_dtype(rows[c])})
    target, explained = None, "prediction"
    if classifier:
        classes = list(model.classes_)
        if len(classes) == 2:  # scikit-learn shows the second class's probability
            explained = f"probability of {classes[1]}"
        else:
            target = classes.index(resolve_positive_class(model.classes_, positive_class)) if (
                positive_class is not None) else int(np.bincount(model.predict_proba(rows).argmax(axis=1)).argmax())
            explained = f"probability of {classes[target]}"
    figure, axes = plt.subplots(1, len(features), figsize=(3.6 * len(features), 3.6), squeeze=False)
    display = PartialDependenceDisplay.from_estimator(
        model, rows, features, categorical_features=categorical or None, target=target, ax=axes[0],
        kind=["average" if c in categorical else "both" for c in features], subsample=ICE_ROWS, grid_resolution=20,
        random_state=0, centered=False)
    curves = pd.concat([pd.DataFrame({"feature": column, "value": result["grid_values"][0],
                                      "average": result["average"][0 if target is None or len(result["average"]) == 1
                                                                   else target]})
                        for column, result in zip(features, display.pd_results, strict=True)], ignore_index=True)
    figure.suptitle(f"Partial dependence and ICE: {explained}", fontsize=10)
    figure.tight_layout()
    return figure, curves, explained
