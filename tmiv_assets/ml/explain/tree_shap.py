"""Exact path-dependent TreeSHAP for XGBoost and LightGBM, faster than the libraries' own `pred_contribs`.

The libraries (and shap's TreeExplainer, which calls them) run the recursive TreeSHAP of Lundberg et al.: per row,
tree and leaf O(D^2) work for paths of D distinct features. Here the tables of FastTreeSHAP v2 (Yang, 2022) are
built once per model: a leaf's contribution to feature i depends on the row only through which of the leaf's path
features the row satisfies (a pattern of D bits), so for every leaf and pattern the D contributions are computed
ahead. Per row a tree is then one walk over its nodes that carries each path's pattern, and D additions per leaf.

For a leaf with value v, distinct path features F (|F| = d), zero fractions z_j (the share of training cover that
follows the path at the splits on j) and a row satisfying the subset A of F:
    phi_i = v (1 - z_i) Q(A) H(A - {i})   for i in A,      phi_i = -v Q(A) H(A)   for i not in A,
    Q(A) = prod_{j not in A} z_j,   H(P) = sum_{S subset of P} |S|! (d - |S| - 1)! / d! prod_{j in P - S} z_j,
and H(P) = sum_s w(s, d) e_{|P|-s}(z_P) with e_k the elementary symmetric polynomials of P's zero fractions.
The base value is the model's margin on the first row minus that row's values (SHAP values sum to the margin).

Models with categorical splits, DART or linear trees, and those whose tables would be too large (paths of more
than MAX_PATH_FEATURES distinct features, as LightGBM's leaf-wise trees can grow), return None: the caller then
uses the library's own call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import factorial

import numba
import numpy as np
import xgboost

MAX_PATH_FEATURES = 16
MAX_TABLE_VALUES = 16_000_000  # 128 MB of float64
XGBOOST_RULE, LIGHTGBM_NAN, LIGHTGBM_ZERO, LIGHTGBM_NONE = 0, 1, 2, 3


@dataclass(frozen=True)
class _Forest:
    """Every tree's nodes flattened, with the per-leaf tables."""

    roots: np.ndarray
    tree_output: np.ndarray
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    rule: np.ndarray
    position: np.ndarray
    new_feature: np.ndarray
    leaf: np.ndarray
    leaf_size: np.ndarray
    leaf_features_start: np.ndarray
    leaf_features: np.ndarray
    table_start: np.ndarray
    table: np.ndarray
    outputs: int
    max_depth: int


def fast_margin_contributions(model, rows: np.ndarray, threads: int = 1) -> np.ndarray | None:
    """Path-dependent SHAP values of the raw margin, (rows, outputs, features + 1) with the base last, as the
    libraries return them; None where this model is not supported (then call the library)."""
    forest = _xgboost_forest(model) if isinstance(model, xgboost.XGBModel) else _lightgbm_forest(model)
    if forest is None:
        return None
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    if isinstance(model, xgboost.XGBModel):  # XGBoost compares in float32
        rows = rows.astype(np.float32).astype(np.float64)
    values = np.zeros((len(rows), forest.outputs, rows.shape[1] + 1))
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        _accumulate(rows, forest.roots, forest.tree_output, forest.left, forest.right, forest.feature,
                    forest.threshold, forest.default_left, forest.rule, forest.position, forest.new_feature,
                    forest.leaf, forest.leaf_size, forest.leaf_features_start, forest.leaf_features,
                    forest.table_start, forest.table, forest.max_depth, values)
    finally:
        numba.set_num_threads(previous)
    margin = _margin(model, rows[:1])
    values[:, :, -1] = margin - values[0, :, :-1].sum(axis=1)
    return values


def _margin(model, row: np.ndarray) -> np.ndarray:
    if isinstance(model, xgboost.XGBModel):
        booster = model.get_booster()
        best = booster.attr("best_iteration")
        margin = booster.predict(xgboost.DMatrix(row), output_margin=True, validate_features=False,
                                 iteration_range=(0, int(best) + 1 if best is not None else 0))
    else:
        margin = model.booster_.predict(row, raw_score=True)
    return np.asarray(margin, dtype=float).reshape(-1)


def _xgboost_forest(model) -> _Forest | None:
    booster = model.get_booster()
    learner = json.loads(booster.save_raw("json"))["learner"]
    if learner["gradient_booster"]["name"] != "gbtree":
        return None
    gbtree = learner["gradient_booster"]["model"]
    best = booster.attr("best_iteration")
    count = gbtree["iteration_indptr"][int(best) + 1] if best is not None else len(gbtree["trees"])
    trees = []
    for tree, output in zip(gbtree["trees"][:count], gbtree["tree_info"][:count], strict=True):
        if any(int(t) != 0 for t in tree.get("split_type", [])):
            return None  # categorical splits
        left, right = np.asarray(tree["left_children"]), np.asarray(tree["right_children"])
        conditions = np.asarray(tree["split_conditions"], dtype=np.float32).astype(np.float64)
        trees.append({"left": left, "right": right, "feature": np.asarray(tree["split_indices"]),
                      "threshold": conditions, "value": conditions,  # a leaf's value sits in split_conditions
                      "default_left": np.asarray(tree["default_left"], dtype=bool),
                      "cover": np.asarray(tree["sum_hessian"], dtype=float), "rule": XGBOOST_RULE, "output": output})
    outputs = max(1, int(learner["learner_model_param"]["num_class"]))
    return _flatten(trees, outputs)


def _lightgbm_forest(model) -> _Forest | None:
    booster = model.booster_
    if booster.params.get("linear_tree"):
        return None
    dump = booster.dump_model()
    per_iteration = dump["num_tree_per_iteration"]
    trees = []
    for info in dump["tree_info"]:
        nodes = _lightgbm_nodes(info["tree_structure"])
        if nodes is None:
            return None
        trees.append(nodes | {"output": info["tree_index"] % per_iteration})
    return _flatten(trees, per_iteration)


def _lightgbm_nodes(root: dict) -> dict | None:
    """LightGBM's nested tree as node arrays (node 0 the root)."""
    records, stack = [], [(root, -1, False)]
    while stack:
        node, parent, is_left = stack.pop()
        index = len(records)
        records.append([node, -1, -1])
        if parent >= 0:
            records[parent][1 if is_left else 2] = index
        if "split_index" in node:
            if node["decision_type"] != "<=":
                return None  # categorical split
            stack.extend([(node["right_child"], index, False), (node["left_child"], index, True)])
    rules = {"NaN": LIGHTGBM_NAN, "Zero": LIGHTGBM_ZERO, "None": LIGHTGBM_NONE}
    split = ["split_index" in node for node, _, _ in records]
    return {"left": np.array([r[1] for r in records]), "right": np.array([r[2] for r in records]),
            "feature": np.array([node.get("split_feature", -1) for node, _, _ in records]),
            "threshold": np.array([node.get("threshold", 0.0) for node, _, _ in records], dtype=float),
            "value": np.array([node.get("leaf_value", 0.0) for node, _, _ in records], dtype=float),
            "default_left": np.array([bool(node.get("default_left", False)) for node, _, _ in records]),
            "cover": np.array([node["internal_count"] if is_split else node["leaf_count"]
                               for (node, _, _), is_split in zip(records, split, strict=True)], dtype=float),
            "rule": np.array([rules.get(node.get("missing_type", "None"), LIGHTGBM_NONE) for node, _, _ in records])}


def _flatten(trees: list[dict], outputs: int) -> _Forest | None:
    """Node arrays of all trees end to end, each node's path position and each leaf's table."""
    columns = {k: [] for k in ("left", "right", "feature", "threshold", "default_left", "rule", "position",
                               "new_feature", "leaf")}
    roots, tree_output, leaves, offset, max_depth = [], [], [], 0, 0
    for tree in trees:
        size = len(tree["left"])
        roots.append(offset)
        tree_output.append(tree["output"])
        position, new_feature, leaf = np.zeros(size, int), np.zeros(size, bool), np.full(size, -1)
        stack = [(0, (), (), 1)]  # node, path features, their zero fractions, depth
        while stack:
            node, features, fractions, depth = stack.pop()
            max_depth = max(max_depth, depth)
            if tree["left"][node] < 0:
                if len(features) > MAX_PATH_FEATURES:
                    return None
                leaf[node] = len(leaves)
                leaves.append((features, fractions, tree["value"][node]))
                continue
            feature = tree["feature"][node]
            new_feature[node] = feature not in features
            position[node] = len(features) if new_feature[node] else features.index(feature)
            for child in (tree["left"][node], tree["right"][node]):
                share = tree["cover"][child] / tree["cover"][node] if tree["cover"][node] > 0 else 0.0
                if new_feature[node]:
                    stack.append((child, (*features, feature), (*fractions, share), depth + 1))
                else:
                    changed = list(fractions)
                    changed[position[node]] *= share
                    stack.append((child, features, tuple(changed), depth + 1))
        rule = tree["rule"]
        columns["left"].append(np.where(tree["left"] >= 0, tree["left"] + offset, -1))
        columns["right"].append(np.where(tree["right"] >= 0, tree["right"] + offset, -1))
        columns["feature"].append(tree["feature"])
        columns["threshold"].append(tree["threshold"])
        columns["default_left"].append(tree["default_left"])
        columns["rule"].append(np.broadcast_to(rule, (size,)) if np.ndim(rule) == 0 else rule)
        columns["position"].append(position)
        columns["new_feature"].append(new_feature)
        columns["leaf"].append(leaf)
        offset += size
    sizes = np.array([len(f) for f, _, _ in leaves])
    if int(((2 ** sizes) * np.maximum(sizes, 1)).sum()) > MAX_TABLE_VALUES:
        return None
    features_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    table_start = np.concatenate([[0], np.cumsum((2 ** sizes) * sizes)[:-1]])
    table = np.zeros(int(((2 ** sizes) * sizes).sum()))
    weights = np.array([[factorial(s) * factorial(d - s - 1) / factorial(d) if s < d else 0.0
                         for s in range(MAX_PATH_FEATURES + 1)] for d in range(MAX_PATH_FEATURES + 1)])
    for index, (_, fractions, value) in enumerate(leaves):
        if sizes[index]:
            _leaf_table(np.asarray(fractions, dtype=float), float(value), weights[sizes[index]],
                        table[table_start[index]:table_start[index] + (2 ** sizes[index]) * sizes[index]])
    joined = {k: np.concatenate(v) for k, v in columns.items()}
    return _Forest(
        np.asarray(roots), np.asarray(tree_output), joined["left"].astype(np.int64), joined["right"].astype(np.int64),
        joined["feature"].astype(np.int64), joined["threshold"].astype(np.float64),
        joined["default_left"].astype(np.bool_), joined["rule"].astype(np.int64), joined["position"].astype(np.int64),
        joined["new_feature"].astype(np.bool_), joined["leaf"].astype(np.int64), sizes.astype(np.int64),
        features_start.astype(np.int64),
        np.asarray([f for features, _, _ in leaves for f in features], dtype=np.int64),
        table_start.astype(np.int64), table, outputs, max_depth)


@numba.njit(cache=True)
def _leaf_table(z: np.ndarray, value: float, weights: np.ndarray, out: np.ndarray) -> None:
    """out[pattern * d + k]: the leaf's contribution to its k-th path feature for a row satisfying `pattern`."""
    d = len(z)
    patterns = 1 << d
    h = np.zeros(patterns)
    q = np.ones(patterns)
    poly = np.zeros(d + 1)
    for pattern in range(patterns):
        poly[:] = 0.0
        poly[0] = 1.0
        members = 0
        for j in range(d):
            if pattern >> j & 1:
                members += 1
                for k in range(members, 0, -1):  # elementary symmetric polynomials of the members' z
                    poly[k] += z[j] * poly[k - 1]
            else:
                q[pattern] *= z[j]
        total = 0.0
        for s in range(members + 1):
            total += weights[s] * poly[members - s]
        h[pattern] = total
    for pattern in range(patterns):
        off = -value * q[pattern] * h[pattern]
        for k in range(d):
            if pattern >> k & 1:
                out[pattern * d + k] = value * (1.0 - z[k]) * q[pattern] * h[pattern ^ (1 << k)]
            else:
                out[pattern * d + k] = off


@numba.njit(parallel=True, cache=True)
def _accumulate(rows, roots, tree_output, left, right, feature, threshold, default_left, rule, position,
                new_feature, leaf, leaf_size, leaf_features_start, leaf_features, table_start, table, max_depth,
                values) -> None:
    for r in numba.prange(rows.shape[0]):
        node_stack = np.empty(max_depth + 2, np.int64)
        pattern_stack = np.empty(max_depth + 2, np.int64)
        for t in range(len(roots)):
            output = tree_output[t]
            top = 0
            node_stack[0] = roots[t]
            pattern_stack[0] = 0
            while top >= 0:
                node = node_stack[top]
                pattern = pattern_stack[top]
                top -= 1
                if left[node] < 0:
                    index = leaf[node]
                    d = leaf_size[index]
                    start = table_start[index] + pattern * d
                    first = leaf_features_start[index]
                    for k in range(d):
                        values[r, output, leaf_features[first + k]] += table[start + k]
                    continue
                x = rows[r, feature[node]]
                kind = rule[node]
                if kind == 3 and np.isnan(x):  # LightGBM without missing values: NaN is 0
                    x = 0.0
                if np.isnan(x) or (kind == 2 and abs(x) <= 1e-35):
                    goes_left = default_left[node]
                elif kind == 0:
                    goes_left = x < threshold[node]
                else:
                    goes_left = x <= threshold[node]
                bit = np.int64(1) << position[node]
                if new_feature[node]:
                    left_pattern = pattern | bit if goes_left else pattern
                    right_pattern = pattern if goes_left else pattern | bit
                else:
                    left_pattern = pattern if goes_left else pattern & ~bit
                    right_pattern = pattern & ~bit if goes_left else pattern
                top += 1
                node_stack[top] = left[node]
                pattern_stack[top] = left_pattern
                top += 1
                node_stack[top] = right[node]
                pattern_stack[top] = right_pattern
