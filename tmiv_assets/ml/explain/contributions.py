"""Additive contributions of each encoded feature to a fitted model's output, for every row: the engine under the
SHAP report and the reason codes of scored rows.

Boosted trees are explained by exact path-dependent TreeSHAP of the raw margin, fast enough for every scored row:
XGBoost and LightGBM by our table-driven TreeSHAP (`tree_shap`, faster than their own `pred_contribs`), CatBoost and
the models that one does not cover by the library's own C++ TreeSHAP (`pred_contribs`, `pred_contrib`, CatBoost's
`ShapValues`). scikit-learn trees and forests go through shap's TreeExplainer (its C++ TreeSHAP; Saabas's approximation
for forests too deep for it on the rows asked), linear models are exact from their coefficients, anything else by
permutation sampling on a background sample: shap's antithetic algorithm, vectorised over the rows here so that each
pass is one call of the model. shap's own explainer calls the model once per row and compiles its numba kernels in
every new process (about 10 s, which each explaining step paid), for values of the same estimator.

The AutoML's final model averages its fold models' probabilities, not their margins, so a classifier's margin values
are carried into probability: each model's values are scaled by (probability - base probability) / (margin - base
margin), which keeps their signs and order and makes them sum exactly to that model's probability change. Values
of the weighted bag are then the weighted sum of its models' values, and values + base = the bag's output on every
row, which is checked per model: a model whose values do not add up to its own prediction (a library's copy of the
trees disagreeing, an objective whose output is not the margin's sigmoid) is explained by permutation instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import catboost
import numpy as np
import shap
import xgboost
from scipy.special import expit, softmax
from threadpoolctl import threadpool_limits

from tmiv_assets.ml.explain.tree_shap import fast_margin_contributions

SKLEARN_TREES = {"DecisionTreeClassifier", "DecisionTreeRegressor", "RandomForestClassifier", "RandomForestRegressor",
                 "ExtraTreesClassifier", "ExtraTreesRegressor"}
# scikit-learn's boosting, explained by shap's TreeSHAP of its raw margin: by permutation instead, the reason codes
# of a 900-row batch took over a minute.
SKLEARN_BOOSTING = {"HistGradientBoostingClassifier", "HistGradientBoostingRegressor"}
# shap's exact TreeSHAP of a scikit-learn forest costs about leaves x depth² per tree and row, on one thread: 200
# unpruned trees on 21,000 rows took 0.28 s a row, so a 900-row batch's reason codes took minutes. Past
# EXACT_TREE_SECONDS such a model gets Saabas's path attribution (shap's approximate TreeSHAP): each split's change
# of the expected value goes to its feature along the row's own path, which adds up to the output exactly but
# follows one feature order instead of averaging over all of them. 500-1,100x faster on such forests.
TREE_SHAP_WORK_PER_SECOND = 2e9  # of the sum over trees of leaves x max depth², per row: measured 2.0e9-3.4e9
EXACT_TREE_SECONDS = 5.0
PERMUTATION_BACKGROUND = 20  # the permutation explainer's cost is rows x evaluations x background rows
PERMUTATIONS = 3  # each forward-and-back pass is exact in sum; more passes only lower the variance
PERMUTATION_CHUNK = 4_000_000  # masked input cells per model call: bounds the memory of a pass on wide data
ADDITIVITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Contributions:
    values: np.ndarray
    """(rows, encoded features, outputs): classes' probabilities for a classifier, the prediction for regression."""
    base: np.ndarray
    """(rows, outputs); values summed over features + base = the model's output."""
    methods: dict[str, str]
    """'<index>:<model class>' -> how that model was explained."""
    additivity_error: float
    """max |values summed + base - output| over rows and outputs."""


def model_output(model, rows: np.ndarray, classifier: bool) -> np.ndarray:
    """(rows, outputs): class probabilities, or the prediction as one column."""
    return model.predict_proba(rows) if classifier else np.asarray(model.predict(rows), dtype=float)[:, None]


def weighted_models(estimator) -> list[tuple[float, object]]:
    """(weight, model) of every model whose outputs the estimator averages; itself with weight 1 otherwise."""
    if hasattr(estimator, "members") and hasattr(estimator, "estimators_"):  # FoldBag: members of fold models
        total = sum(weight for _, weight, _ in estimator.members)
        return [(weight / total / len(models), model) for _, weight, models in estimator.members for model in models]
    return [(1.0, estimator)]


def method_of(model, n_rows: int = 1) -> str:
    """How `n_rows` rows of the model are explained: 'native' (the library's TreeSHAP on the margin), 'tree'
    (shap's), 'tree_saabas' (shap's approximate, where its exact one would take too long), 'tree_margin' (shap's
    on the margin), 'linear' or 'permutation'."""
    if isinstance(model, (xgboost.XGBModel, catboost.CatBoost)) or hasattr(model, "booster_"):  # LightGBM
        return "native"
    if type(model).__name__ in SKLEARN_TREES:
        trees = [t.tree_ for t in getattr(model, "estimators_", [model])]
        work = n_rows * sum(t.n_leaves * t.max_depth ** 2 for t in trees)
        return "tree" if work / TREE_SHAP_WORK_PER_SECOND <= EXACT_TREE_SECONDS else "tree_saabas"
    if type(model).__name__ in SKLEARN_BOOSTING:
        return "tree_margin"
    if hasattr(model, "coef_") and (hasattr(model, "decision_function") or not hasattr(model, "predict_proba")):
        return "linear"
    return "permutation"


def margin_contributions(model, rows: np.ndarray, threads: int = 1) -> np.ndarray:
    """Exact path-dependent SHAP values of a boosted model's raw margin: (rows, outputs, features + 1), the base
    last; our table-driven TreeSHAP (`tree_shap`) for XGBoost and LightGBM where it applies, else the library's."""
    if hasattr(model, "booster_rows"):  # LightGBM or CatBoost taking the pooled columns' codes as categories
        rows = model.booster_rows(rows)
    fast = None if isinstance(model, catboost.CatBoost) else fast_margin_contributions(model, rows, threads)
    return fast if fast is not None else native_margin_contributions(model, rows, threads)


def native_margin_contributions(model, rows: np.ndarray, threads: int = 1) -> np.ndarray:
    """The library's own TreeSHAP of the raw margin: (rows, outputs, features + 1), the bias last."""
    if isinstance(model, xgboost.XGBModel):
        booster = model.get_booster()
        booster.set_param({"nthread": threads})
        best = booster.attr("best_iteration")  # set by early stopping; predict stops there too
        contributions = booster.predict(xgboost.DMatrix(rows, nthread=threads), pred_contribs=True,
                                        iteration_range=(0, int(best) + 1 if best is not None else 0),
                                        validate_features=False)
    elif isinstance(model, catboost.CatBoost):
        pool = catboost.Pool(rows, cat_features=model.get_cat_feature_indices())  # the codes' columns, if any
        contributions = model.get_feature_importance(pool, type="ShapValues", thread_count=threads)
    else:  # LightGBM: the booster uses the best iteration when early stopping found one
        contributions = model.booster_.predict(rows, pred_contrib=True, num_threads=threads)
    contributions = np.asarray(contributions, dtype=float)
    if contributions.ndim == 2:  # one output, or LightGBM's outputs side by side
        contributions = contributions.reshape(len(rows), -1, rows.shape[1] + 1)
    return contributions


def model_contributions(model, method: str, rows: np.ndarray, background: np.ndarray, classifier: bool,
                        seed: int = 0, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One model's values (rows, features, outputs) and base (rows, outputs) in its output space."""
    if method == "native":
        contributions = margin_contributions(model, rows, threads)
        values, base = contributions[:, :, :-1].transpose(0, 2, 1), contributions[:, :, -1]
        return _margin_to_probability(values, base) if classifier else (values, base)
    if method == "linear":
        coefficients = np.atleast_2d(model.coef_)  # (outputs, features)
        centre = background.mean(axis=0)
        values = (rows - centre)[:, :, None] * coefficients.T[None, :, :]
        base = np.broadcast_to(centre @ coefficients.T + np.atleast_1d(model.intercept_),
                               (len(rows), len(coefficients)))
        return _margin_to_probability(values, base) if classifier else (values, base)
    if method not in ("tree", "tree_saabas", "tree_margin"):
        return permutation_contributions(lambda masked: model_output(model, masked, classifier), rows,
                                         background[:PERMUTATION_BACKGROUND], PERMUTATIONS, seed)
    # shap's raw output: a forest's probability itself, a boosting's margin, carried into probability as above.
    explanation = shap.TreeExplainer(model)(rows, check_additivity=False, approximate=method == "tree_saabas")
    values, base = np.asarray(explanation.values, dtype=float), np.asarray(explanation.base_values, dtype=float)
    if values.ndim == 2:
        values = values[:, :, None]
    base = np.broadcast_to(base.reshape(len(rows), -1), (len(rows), values.shape[2]))
    return _margin_to_probability(values, base) if method == "tree_margin" and classifier else (values, base)


def permutation_contributions(output, rows: np.ndarray, background: np.ndarray, passes: int,
                              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shapley values by antithetic permutation sampling (Strumbelj and Kononenko; shap's Permutation explainer):
    each pass switches a row's features from the background's values to the row's own in a random order, then
    back off in the same order, and credits every step's change of the output (averaged over the background) to
    the feature switched. The sum of each pass is output(row) - base exactly. `output` maps (n, features) inputs
    to (n, outputs); returns values (rows, features, outputs) and base (rows, outputs)."""
    n, m = rows.shape
    rng = np.random.default_rng(seed)
    base = output(background).mean(axis=0)
    outputs = base.shape[0]
    values = np.zeros((n, m, outputs))
    step = np.arange(2 * m + 1)[:, None, None]  # steps 0..m switch features on, m+1..2m off again
    chunk = max(1, PERMUTATION_CHUNK // ((2 * m + 1) * len(background) * m))
    for _ in range(passes):
        order = rng.permuted(np.tile(np.arange(m), (n, 1)), axis=1)  # a random order per row
        rank = np.argsort(order, axis=1)  # the step at which each feature is switched
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            on = np.where(step <= m, rank[None, part] < step, rank[None, part] >= step - m)  # (2m+1, rows, m)
            masked = np.where(on[:, :, None, :], rows[None, part, None, :], background[None, None, :, :])
            means = output(masked.reshape(-1, m)).reshape(*masked.shape[:3], outputs).mean(axis=2)
            change = np.diff(means, axis=0)  # (2m, rows, outputs): step k+1's output minus step k's
            rows_in_part = np.arange(start, start + means.shape[1])
            for k in range(m):  # step k switched order[:, k] on, step m + k switched it off
                values[rows_in_part, order[part, k]] += change[k] - change[m + k]
    return values / (2 * passes), np.broadcast_to(base, (n, outputs))


def _margin_to_probability(values: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Margin values scaled per row and output so that they sum to the probability's change from the base's."""
    margin = base + values.sum(axis=1)
    if values.shape[2] == 1:  # binary: the positive class's log-odds
        probability, base_probability = expit(margin), expit(base)
    else:
        probability, base_probability = softmax(margin, axis=1), softmax(base, axis=1)
    change = margin - base
    slope = base_probability * (1 - base_probability)  # the limit where the margin barely moved
    flat = np.abs(change) < 1e-12
    scale = np.where(flat, slope, (probability - base_probability) / np.where(flat, 1.0, change))
    values = values * scale[:, None, :]
    if values.shape[2] == 1:  # complete the other class: its probability is one minus this one
        return np.concatenate([-values, values], axis=2), np.concatenate([1 - base_probability, base_probability],
                                                                         axis=1)
    return values, base_probability


def ensemble_contributions(estimator, rows: np.ndarray, background: np.ndarray, seed: int = 0,
                           threads: int = 1) -> Contributions:
    """Values of a fitted estimator (or a weighted bag of them) on encoded rows, each model checked to add up."""
    classifier = hasattr(estimator, "predict_proba")
    values, base, methods = 0.0, 0.0, {}
    with threadpool_limits(threads):  # BLAS and OpenMP inside shap and the libraries: no more than asked
        for index, (weight, model) in enumerate(weighted_models(estimator)):
            method = method_of(model, len(rows))
            output = model_output(model, rows, classifier)
            model_values, model_base = model_contributions(model, method, rows, background, classifier, seed, threads)
            error = float(np.abs(model_values.sum(axis=1) + model_base - output).max())
            # Relative to the output's size: boosting libraries predict in float32 (1e-7 of the value).
            if error > ADDITIVITY_TOLERANCE * max(1.0, float(np.abs(output).max())):
                method = f"permutation ({method} was off by {error:.2g})"
                model_values, model_base = model_contributions(model, "permutation", rows, background, classifier,
                                                               seed, threads)
            values, base = values + weight * model_values, base + weight * model_base
            methods[f"{index}:{type(model).__name__}"] = method
        output = model_output(estimator, rows, classifier)
    values, base = np.asarray(values), np.asarray(base)
    return Contributions(values, base, methods, float(np.abs(values.sum(axis=1) + base - output).max()))
