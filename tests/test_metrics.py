"""MMSA metric conventions on hand-computed cases (zeros, rounding ties, bin edges)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from msekit.errors import MsekitError
from msekit.metrics import (
    choose_convention,
    classification_metrics,
    primary_metric,
    regression_metrics,
    scalar_metrics,
)

# pred 0.0 against true 0.0 (dropped by non0) and against true 1.0 (right for has0, wrong for
# non0); 2.5 and -0.5 are rounding ties (np.round: to the even integer, as MMSA).
MOSEI_PRED = [0.0, 0.0, -0.5, 2.5, -3.7, 1.5]
MOSEI_TRUE = [0.0, 1.0, -1.0, 3.0, -2.5, -0.5]


def test_mosei_by_hand():
    m = regression_metrics(MOSEI_PRED, MOSEI_TRUE, convention="mosei")
    assert m["convention"] == "mosei" and m["n"] == 6 and m["n_non0"] == 5
    assert m["acc2_has0"] == pytest.approx(5 / 6)
    assert m["acc2_non0"] == pytest.approx(3 / 5)
    # has0 true T T F T F F, pred T T F T F T: F1(T) = 6/7, F1(F) = 4/5, 3 each
    assert m["f1_has0"] == pytest.approx((3 * 6 / 7 + 3 * 0.8) / 6)
    # non0 true T F T F F, pred F F T F T: F1(T) = 1/2 (2), F1(F) = 2/3 (3)
    assert m["f1_non0"] == pytest.approx((2 * 0.5 + 3 * 2 / 3) / 5)
    # Acc-7: pred rounds to 0 0 -0 2 -3 2, true to 0 1 -1 3 -2 -0
    assert m["acc7"] == pytest.approx(1 / 6)
    # Acc-5: pred clipped to +-2 rounds to 0 0 -0 2 -2 2, true to 0 1 -1 2 -2 -0
    assert m["acc5"] == pytest.approx(3 / 6)
    assert m["mae"] == pytest.approx((0 + 1 + 0.5 + 0.5 + 1.2 + 2.0) / 6)


def test_mosei_mae_is_unclipped_and_corr():
    m = regression_metrics([5.0, -5.0], [3.0, -3.0], convention="mosei")
    assert m["mae"] == pytest.approx(2.0)
    assert m["acc7"] == 1.0 and m["acc5"] == 1.0
    assert m["corr"] == pytest.approx(1.0)
    # constant predictions: Pearson is undefined, reported as NaN rather than a number
    assert math.isnan(regression_metrics([0.3, 0.3, 0.3], [1.0, -1.0, 2.0], "mosei")["corr"])


def test_sims_by_hand():
    pred = [-1.5, -0.1, 0.0, 0.1, 0.05, 0.7, 0.71]
    true = [-1.0, -0.2, 0.0, 0.2, 0.1, 0.7, 1.2]
    m = regression_metrics(pred, true, convention="sims")
    assert m["convention"] == "sims"
    assert m["acc2"] == 1.0 and m["f1"] == 1.0  # zero counts as negative on both sides
    # edges are closed on the right: -0.1 -> lowest bin, 0.1 -> middle, 0.7 -> (0.1, 0.7]
    assert m["acc3"] == pytest.approx(6 / 7)  # only 0.1 vs 0.2 differs
    assert m["acc5"] == pytest.approx(6 / 7)
    # MAE after clipping both sides to [-1, 1]
    assert m["mae"] == pytest.approx((0 + 0.1 + 0 + 0.1 + 0.05 + 0 + 0.29) / 7)


def test_sims_zero_is_negative():
    m = regression_metrics([0.0, 0.01], [0.01, 0.0], convention="sims")
    assert m["acc2"] == 0.0


def test_classification_by_hand():
    m = classification_metrics([0, 1, 1, 2, 2, 0], [0, 1, 2, 2, 2, 1], ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # F1: a 2/3 (support 1), b 1/2 (2), c 4/5 (3), d absent (0)
    assert m["weighted_f1"] == pytest.approx((2 / 3 + 2 * 0.5 + 3 * 0.8) / 6)
    rows = {r["label"]: r for r in m["per_class"]}
    assert rows["c"]["precision"] == 1.0 and rows["c"]["recall"] == pytest.approx(2 / 3)
    assert rows["d"]["support"] == 0 and rows["d"]["f1"] == 0.0
    assert m["confusion"][2] == [0, 1, 2, 0]  # true c: once b, twice c
    assert scalar_metrics(m) == {"accuracy": m["accuracy"], "weighted_f1": m["weighted_f1"], "n": 6}


def test_convention_choice_and_primary():
    assert choose_convention([-1.0, 0.4, 1.0]) == "sims"
    assert choose_convention([-1.2, 0.4]) == "mosei"
    assert choose_convention([0, 1], task="classification") == "classification"
    assert regression_metrics([0.2], [0.5])["convention"] == "sims"
    assert primary_metric("regression") == ("mae", False)
    assert primary_metric("classification") == ("weighted_f1", True)


def test_bad_input_is_a_user_error():
    with pytest.raises(MsekitError, match="differ in length"):
        regression_metrics([1.0], [1.0, 2.0])
    with pytest.raises(MsekitError, match="finite"):
        regression_metrics([float("nan")], [1.0])
    with pytest.raises(MsekitError, match="empty"):
        regression_metrics([], [])
    with pytest.raises(MsekitError, match="outside"):
        classification_metrics([3], [0], ["a", "b"])
    with pytest.raises(MsekitError, match="convention"):
        regression_metrics([1.0], [1.0], convention="meld")


def test_bootstrap_se_matches_the_binomial_standard_error_of_accuracy():
    from msekit.inference import Predictions
    from msekit.metrics import bootstrap_se

    n, right = 400, 300  # accuracy 0.75: binomial SE sqrt(0.75 * 0.25 / 400) = 0.0217
    labels = np.zeros(n, int)
    values = np.where(np.arange(n) < right, 0, 1)
    p = Predictions(ids=[str(i) for i in range(n)], task="classification", values=values,
                    parsed=np.ones(n, bool), labels=labels, label_names=["a", "b"])
    se = bootstrap_se(p, "accuracy", draws=400)
    assert abs(se - math.sqrt(0.75 * 0.25 / n)) < 0.2 * math.sqrt(0.75 * 0.25 / n)
    assert bootstrap_se(p, "accuracy", draws=400) == se  # seeded: the same margin on every rank
    # the same predictions, all right: no spread
    assert bootstrap_se(Predictions(ids=p.ids, task="classification", values=labels, parsed=p.parsed,
                                    labels=labels, label_names=["a", "b"]), "accuracy") == 0.0
