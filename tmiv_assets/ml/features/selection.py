"""Feature selection: filters remove features, rankers vote for the best; a table says why.

Filters (variance threshold, correlation filter) drop features outright. Each ranker (mutual
information, RFE, L1 model, tree importance) votes for its top `n_features`; a feature survives when it
passed the filters and got at least `min_votes` votes. Fit on training rows only (e.g. as a Pipeline
step) so selection never looks at validation or test data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor
from sklearn.feature_selection import RFE, VarianceThreshold, mutual_info_classif, mutual_info_regression
from sklearn.linear_model import LassoCV, LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from tmiv_assets.ml.data.spec import CLASSIFICATION
from tmiv_assets.ml.features.engineering import CategoricalEncoder

FILTERS = ("variance", "correlation")
RANKERS = ("mutual_info", "rfe", "l1", "tree")
CORRELATION_BLOCK = 1024


class FeatureSelector(TransformerMixin, BaseEstimator):
    """Combine variance, correlation, mutual-information, RFE, L1 and tree-importance selection.

    Parameters
    ----------
    task : 'binary', 'multiclass' or 'regression'.
    methods : any of 'variance', 'correlation', 'mutual_info', 'rfe', 'l1', 'tree'.
    n_features : how many features each ranker votes for (default: half of those passing the filters).
    min_votes : votes a feature needs from the rankers (ignored when no ranker is chosen).
    variance_threshold : features with at most this variance are dropped.
    correlation_threshold : of two features with |Pearson r| above this, the later one is dropped.

    After `fit`: `ranking_` (one row per input feature with every score, the votes and the verdict)
    and `selected_features_` (in input order).
    """

    def __init__(self, task: str = "binary",
                 methods: tuple[str, ...] = ("variance", "correlation", "mutual_info", "tree"),
                 n_features: int | None = None, min_votes: int = 1, variance_threshold: float = 0.0,
                 correlation_threshold: float = 0.95, random_state: int = 0):
        self.task = task
        self.methods = methods
        self.n_features = n_features
        self.min_votes = min_votes
        self.variance_threshold = variance_threshold
        self.correlation_threshold = correlation_threshold
        self.random_state = random_state

    def fit(self, X, y) -> FeatureSelector:
        X = self._validate(X)
        ranking = pd.DataFrame({"feature": X.columns}).set_index("feature", drop=False)
        ranking["passed_filters"] = True
        # Rankers need complete data; the median fill is for scoring only, the output keeps the NaNs.
        # (Skipped when nothing is missing: a per-column fillna takes a second at 10,000 columns.)
        filled = X.fillna(X.median()).fillna(0.0) if X.isna().to_numpy().any() else X
        if "variance" in self.methods:
            variances = VarianceThreshold(self.variance_threshold).fit(filled)
            ranking["variance"] = variances.variances_
            ranking["passed_filters"] &= variances.get_support()
        if "correlation" in self.methods:
            ranking["max_abs_correlation"], dropped = self._correlated(filled[ranking.index[ranking["passed_filters"]]])
            ranking.loc[dropped, "passed_filters"] = False
        kept = list(ranking.index[ranking["passed_filters"]])
        rankers = [m for m in self.methods if m in RANKERS]
        n_features = self.n_features or max(1, len(kept) // 2)
        ranking["votes"] = 0
        if kept:
            for method in rankers:
                scores = self._score(method, filled[kept], y)
                ranking[method] = pd.Series(scores, index=kept)
                top = pd.Series(scores, index=kept).sort_values(ascending=method == "rfe", kind="stable")
                ranking.loc[top.index[:n_features], "votes"] += 1
        needed = min(self.min_votes, len(rankers))
        ranking["selected"] = ranking["passed_filters"] & (ranking["votes"] >= needed)
        self.ranking_ = ranking.reset_index(drop=True).sort_values(
            ["selected", "votes"], ascending=False, kind="stable").reset_index(drop=True)
        self.selected_features_ = [c for c in X.columns if ranking.loc[c, "selected"]]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def transform(self, X) -> pd.DataFrame:
        check_is_fitted(self, "selected_features_")
        return X[self.selected_features_]

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "selected_features_")
        return np.asarray(self.selected_features_, dtype=object)

    def _validate(self, X) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"FeatureSelector needs a DataFrame with named columns, got {type(X).__name__}")
        unknown = [m for m in self.methods if m not in FILTERS + RANKERS]
        if unknown or not self.methods:
            raise ValueError(f"unknown selection methods {unknown or self.methods}; use any of {FILTERS + RANKERS}")
        if self.task not in (*CLASSIFICATION, "regression"):
            raise ValueError(f"task {self.task!r} is not one of binary, multiclass, regression")
        text = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
        if text:
            raise ValueError(f"FeatureSelector needs numeric features; encode {text} first "
                             "(e.g. CategoricalEncoder in the same Pipeline)")
        if np.isinf(X.to_numpy(dtype=float, na_value=np.nan)).any():
            raise ValueError("FeatureSelector: features contain infinite values; replace them before selecting")
        return X.astype(float)

    def _correlated(self, X: pd.DataFrame) -> tuple[pd.Series, list[str]]:
        """Each column's largest |r| with another, and the columns dropped: those above the threshold with an
        earlier kept column."""
        values = X.to_numpy(dtype=float)
        centred = values - values.mean(axis=0)
        norms = np.linalg.norm(centred, axis=0)
        # Constant columns correlate with nothing (pandas: NaN). Test them with ptp: a mean of identical floats
        # can be off by an ulp, leaving a tiny non-zero norm.
        varies = (np.ptp(values, axis=0) > 0) & (norms > 0)
        unit = np.divide(centred, norms, out=np.zeros_like(centred), where=varies)
        n = unit.shape[1]
        max_abs, dropped = np.zeros(n), np.zeros(n, dtype=bool)
        # Column blocks keep memory at columns x block instead of columns². Each block is correlated with the columns
        # up to its end only (the rest of the matrix is the mirror image), and the columns before it are settled
        # (kept or dropped) by then, as the greedy rule needs.
        for start in range(0, n, CORRELATION_BLOCK):
            stop = min(start + CORRELATION_BLOCK, n)
            correlation = np.abs(unit[:, :stop].T @ unit[:, start:stop])
            correlation[np.arange(start, stop), np.arange(stop - start)] = 0.0
            max_abs[:stop] = np.maximum(max_abs[:stop], correlation.max(axis=1))
            max_abs[start:stop] = np.maximum(max_abs[start:stop], correlation.max(axis=0))
            above = correlation > self.correlation_threshold
            dropped[start:stop] = above[:start][~dropped[:start]].any(axis=0)  # by kept columns of earlier blocks
            within = np.triu(above[start:], 1)  # then in order inside the block, visiting only columns with partners
            for i in np.flatnonzero(within.any(axis=1)):
                if not dropped[start + i]:
                    dropped[start:stop] |= within[i]
        return pd.Series(max_abs, index=X.columns), list(X.columns[dropped])

    def _score(self, method: str, X: pd.DataFrame, y) -> np.ndarray:
        classification = self.task in CLASSIFICATION
        if method == "mutual_info":
            score = mutual_info_classif if classification else mutual_info_regression
            return score(X, y, random_state=self.random_state)
        scaled = StandardScaler().fit_transform(X)
        if method == "l1":
            model = (LogisticRegression(l1_ratio=1.0, solver="saga", C=0.5, max_iter=2000,
                                        random_state=self.random_state) if classification
                     else LassoCV(cv=3, random_state=self.random_state))
            if self.task == "binary" and X.shape[1] > X.shape[0]:
                # With more features than rows saga stops unconverged after 2000 passes (30 s at 300 x 10,000).
                # liblinear solves the same L1 problem to its optimum in under a second: at tol 1e-8 it has the
                # non-zeros saga reaches after 90,000 passes; intercept_scaling=100 makes its intercept penalty
                # negligible. Data with rows >= features keeps saga, and so its selections.
                model.set_params(solver="liblinear", intercept_scaling=100, tol=1e-8)
            coefficients = np.atleast_2d(model.fit(scaled, y).coef_)
            return np.abs(coefficients).sum(axis=0)
        if method == "rfe":
            model = LogisticRegression(max_iter=2000) if classification else Ridge()
            return RFE(model, n_features_to_select=1).fit(scaled, y).ranking_.astype(float)
        trees = (ExtraTreesClassifier if classification else ExtraTreesRegressor)(
            n_estimators=100, random_state=self.random_state, n_jobs=1)
        return trees.fit(X, y).feature_importances_


def rank_features(features: pd.DataFrame, target: str, task: str, random_state: int = 0) -> FeatureSelector:
    """Encode categoricals (one-hot / cross-fitted target encoding), then rank and select with every filter
    and ranker that is cheap enough to run on each materialization."""
    X, y = features.drop(columns=[target]), features[target]
    encoded = CategoricalEncoder(random_state=random_state).fit_transform(X, y)
    methods = ("variance", "correlation", "mutual_info", "l1", "tree")
    return FeatureSelector(task=task, methods=methods, min_votes=2, random_state=random_state).fit(encoded, y)
