"""A/B arm assignment and the significance of a difference between arms."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from tmiv_assets.ml.deploy.ab_testing import assign_arms, compare_arms


@pytest.mark.parametrize("share", [0.5, 0.2])
def test_arms_are_stable_per_id_and_close_to_the_split(share):
    ids = pd.Series(np.arange(10_000))
    arms = assign_arms(ids, share, salt="flights")
    assert abs((arms == "challenger").mean() - share) <= 0.015
    shuffled = ids.sample(frac=1.0, random_state=0)
    assert (assign_arms(shuffled, share, salt="flights") == arms[shuffled.to_numpy()]).all()  # order-free
    assert (assign_arms(ids.astype(str), share, salt="flights") == arms).all()  # ids read back as text
    assert (assign_arms(ids, share, salt="titanic") != arms).any()  # each test gets its own draw


def test_a_split_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        assign_arms(pd.Series([1, 2]), 1.0, salt="x")


def test_accuracy_difference_matches_the_pooled_two_proportion_z_test():
    # Worked example: 800 of 1,000 champion rows right, 850 of 1,000 challenger rows right.
    arms = pd.Series(["champion"] * 1000 + ["challenger"] * 1000)
    truth = pd.Series(["yes"] * 2000)
    predictions = pd.Series((["yes"] * 800 + ["no"] * 200) + (["yes"] * 850 + ["no"] * 150))
    result = compare_arms(arms, truth, predictions, classification=True)
    pooled = 1650 / 2000
    z = (0.85 - 0.80) / np.sqrt(pooled * (1 - pooled) * (1 / 1000 + 1 / 1000))
    assert result.p_value == pytest.approx(2 * norm.sf(z), rel=1e-9)
    assert result.values == {"champion": 0.8, "challenger": 0.85} and result.significant
    assert result.recommendation.startswith("promote the challenger") and result.winner == "challenger"
    small = compare_arms(arms[::50].reset_index(drop=True), truth[::50].reset_index(drop=True),
                         predictions[::50].reset_index(drop=True), classification=True)
    assert not small.significant and small.recommendation.startswith("keep collecting") and small.winner is None


def test_error_difference_uses_a_seeded_bootstrap_interval():
    rng = np.random.default_rng(0)
    arms = pd.Series(["champion"] * 500 + ["challenger"] * 500)
    truth = pd.Series(rng.normal(size=1000))
    predictions = truth + np.r_[rng.normal(scale=1.0, size=500), rng.normal(scale=0.5, size=500)]
    result = compare_arms(arms, truth, pd.Series(predictions), classification=False)
    assert result.metric == "mae" and result.values["challenger"] < result.values["champion"]
    assert result.significant and result.interval[0] > 0
    assert result == compare_arms(arms, truth, pd.Series(predictions), classification=False)  # seeded
