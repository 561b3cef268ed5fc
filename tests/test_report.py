"""The adapter-vs-probe verdict of run reports and multi-seed summaries (msekit.report)."""

from __future__ import annotations

import math

from msekit.report import baseline_verdict, summary_markdown, summary_verdict


def _res(**metrics):
    return {"test": metrics | {"n": 20}, "valid": {"weighted_f1": 0.9, "mae": 0.1, "n": 10}}


def test_classification_verdict_names_the_winner_and_the_figures():
    beats = baseline_verdict(_res(weighted_f1=0.7), {"test": {"weighted_f1": 0.5}}, "weighted_f1")
    assert beats.startswith("the adapter beats the linear probe on test") and "70.00 against 50.00" in beats
    loses = baseline_verdict(_res(weighted_f1=0.5), {"test": {"weighted_f1": 0.7}}, "weighted_f1")
    assert loses.startswith("the linear probe beats the adapter on test") and "70.00 against 50.00" in loses
    assert "20 samples" in loses
    tie = baseline_verdict(_res(weighted_f1=0.6), {"test": {"weighted_f1": 0.6}}, "weighted_f1")
    assert tie.startswith("the adapter ties")


def test_regression_verdict_reads_a_lower_mae_as_better():
    verdict = baseline_verdict(_res(mae=0.4), {"test": {"mae": 0.6}}, "mae")
    assert verdict.startswith("the adapter beats") and "MAE 0.4000 against 0.6000" in verdict
    assert baseline_verdict(_res(mae=0.8), {"test": {"mae": 0.6}}, "mae").startswith("the linear probe beats")


def test_no_verdict_without_a_probe_or_a_finite_value():
    assert baseline_verdict(_res(weighted_f1=0.7), None, "weighted_f1") is None
    assert baseline_verdict(_res(mae=math.nan), {"test": {"mae": 0.6}}, "mae") is None
    assert baseline_verdict(_res(mae=None), {"test": {"mae": 0.6}}, "mae") is None
    # no test split scored by the probe: valid is compared instead
    only_valid = baseline_verdict(_res(mae=0.3), {"valid": {"mae": 0.05}}, "mae")
    assert only_valid.startswith("the linear probe beats the adapter on valid")


def test_summary_verdict_compares_the_means_over_seeds():
    summary = {"seeds": [1, 2], "metric": "weighted_f1",
               "splits": {"test": {"mean": {"weighted_f1": 0.45}, "std": {"weighted_f1": 0.05}}},
               "baseline": {"model": "logistic regression", "test": {"mean": {"weighted_f1": 0.6},
                                                                     "std": {"weighted_f1": 0.0}}}}
    assert summary_verdict(summary).startswith("the linear probe beats the adapter on test (Weighted F1 60.00")
    assert "Verdict (means over seeds): the linear probe beats" in summary_markdown(summary)
    del summary["baseline"]
    assert summary_verdict(summary) is None and "Verdict" not in summary_markdown(summary)
