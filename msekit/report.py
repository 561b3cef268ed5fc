"""The end-of-run report: a metrics table and PNG plots (loss curves, scatter, confusion matrix).

Plots use matplotlib's non-interactive Agg backend, so they work on headless machines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msekit.metrics import METRIC_INFO, PERCENT_METRICS, scalar_metrics


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def read_metrics_log(path: str | Path) -> list[dict[str, Any]]:
    """Reads ``metrics.jsonl`` (one JSON object a line; a torn last line is skipped)."""
    records = []
    p = Path(path)
    if not p.is_file():
        return records
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_loss_curves(records: list[dict[str, Any]], out_png: str | Path, metric: str | None = None) -> Path:
    """Training loss per step (raw and smoothed), validation loss and metric per epoch.

    Args:
        records: ``metrics.jsonl`` records: ``{"kind": "train", "step", "loss", ...}`` and
            ``{"kind": "valid", "epoch", "step", "loss", <metrics>}``.
        out_png: Where to write the figure.
        metric: The validation metric of the right panel (e.g. ``weighted_f1``, ``mae``).

    Returns:
        The PNG path.
    """
    plt = _plt()
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    valid_loss = [r for r in valid if isinstance(r.get("loss"), int | float)]
    fig, axes = plt.subplots(1, 2 if metric else 1, figsize=(11 if metric else 6, 4.2), squeeze=False)
    ax = axes[0, 0]
    if train:
        steps = np.array([r["step"] for r in train])
        loss = np.array([r["loss"] for r in train])
        k = max(1, len(loss) // 20)
        ax.plot(steps, loss, color="tab:blue", alpha=0.3 if k > 1 else 1.0, lw=1 if k > 1 else 2,
                label="train (per step)")
        if k > 1:  # moving average, so the trend is visible through batch noise
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, color="tab:blue", lw=2, label=f"train ({k}-step mean)")
    if valid_loss:
        ax.plot([r["step"] for r in valid_loss], [r["loss"] for r in valid_loss], "o-", color="tab:orange",
                lw=2, label="validation (per epoch)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy on label tokens")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    if metric:
        ax2 = axes[0, 1]
        pts = [(r["epoch"], r[metric]) for r in valid if isinstance(r.get(metric), int | float)]
        if pts:
            ep, val = zip(*pts, strict=True)
            ax2.plot(ep, val, "o-", color="tab:green", lw=2)
            higher = METRIC_INFO.get(metric, (metric, True))[1]
            best = int(np.nanargmax(val) if higher else np.nanargmin(val))
            ax2.plot([ep[best]], [val[best]], "*", color="tab:red", ms=16,
                     label=f"best: {val[best]:.3f} (epoch {ep[best]})")
            ax2.legend(fontsize=9)
        ax2.set_xlabel("epoch")
        ax2.xaxis.get_major_locator().set_params(integer=True)
        ax2.set_ylabel(METRIC_INFO.get(metric, (metric,))[0])
        ax2.set_title(f"Validation {METRIC_INFO.get(metric, (metric,))[0]}")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def plot_regression_scatter(
    pred: Sequence[float], true: Sequence[float], out_png: str | Path, title: str = "",
    value_range: tuple[float, float] | None = None,
) -> Path:
    """Predicted vs true values with the identity line."""
    plt = _plt()
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    fig, ax = plt.subplots(figsize=(5.2, 5))
    lo, hi = value_range or (float(min(pred.min(), true.min())), float(max(pred.max(), true.max())))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="gray", lw=1, label="perfect")
    ax.scatter(true, pred, s=18, alpha=0.6, color="tab:blue", edgecolors="none")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("true value")
    ax.set_ylabel("predicted value")
    ax.set_title(title or f"Predicted vs true (n={len(pred)})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def plot_confusion(
    confusion: Sequence[Sequence[int]], label_names: Sequence[str], out_png: str | Path, title: str = ""
) -> Path:
    """Confusion matrix: colour = share of the true class (row), text = count."""
    plt = _plt()
    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)  # (C, C), rows sum to 1
    c = len(label_names)
    size = max(4.5, 0.6 * c + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(c):
        for j in range(c):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=11,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(c), labels=list(label_names), rotation=30, ha="right")
    ax.set_yticks(range(c), labels=list(label_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"Confusion matrix (n={int(cm.sum())})")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def _fmt(key: str, value: Any) -> str:
    """Accuracies and F1 as percentages, everything else (MAE, Corr, loss, seconds) as is."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{100 * value:.2f}" if key in PERCENT_METRICS else f"{value:.4f}"
    return "n/a" if value is None else str(value)


def _pm(key: str, mean: Any, std: Any) -> str:
    """mean +- std in the table's units."""
    if not isinstance(mean, int | float) or not math.isfinite(mean):
        return "n/a"
    return f"{_fmt(key, float(mean))} ± {_fmt(key, float(std))}"


def metrics_table(results: dict[str, dict[str, Any]], title: str = "Metrics"):
    """A rich Table: one row per metric, one column per split (accuracies in %).

    Args:
        results: split name -> metrics dict (as :func:`msekit.metrics.regression_metrics`).
        title: The table title; the convention is appended.

    Returns:
        A ``rich.table.Table``.
    """
    from rich.table import Table

    conventions = sorted({m.get("convention", "?") for m in results.values()})
    table = Table(title=f"{title} (convention: {', '.join(conventions)})")
    table.add_column("metric")
    for split in results:
        table.add_column(split, justify="right")
    keys: list[str] = []
    for m in results.values():
        keys += [k for k in scalar_metrics(m) if k not in keys]
    for k in keys:
        name = METRIC_INFO.get(k, (k,))[0]
        table.add_row(name, *[_fmt(k, results[s].get(k, "")) if k in results[s] else "" for s in results])
    return table


def per_class_table(metrics: dict[str, Any], title: str = "Per class"):
    """A rich Table of precision / recall / F1 / support per class (classification)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for r in metrics.get("per_class", []):
        table.add_row(r["label"], f"{100 * r['precision']:.1f}", f"{100 * r['recall']:.1f}",
                      f"{100 * r['f1']:.1f}", str(r["support"]))
    return table


def metrics_markdown(results: dict[str, dict[str, Any]]) -> str:
    """The same table as Markdown (written to report.md in the run folder)."""
    keys: list[str] = []
    for m in results.values():
        keys += [k for k in scalar_metrics(m) if k not in keys]
    conventions = ", ".join(sorted({m.get("convention", "?") for m in results.values()}))
    lines = [f"Convention: {conventions}. Accuracies and F1 in %.", "",
             "| metric | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for k in keys:
        cells = [_fmt(k, results[s][k]) if k in results[s] else "" for s in results]
        lines.append(f"| {METRIC_INFO.get(k, (k,))[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def with_baseline(results: dict[str, dict[str, Any]], baseline: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The results plus one ``probe <split>`` column per split the linear probe scored."""
    if not baseline:
        return results
    probe = {f"probe {s}": m for s, m in baseline.items() if isinstance(m, dict) and s in results}
    return results | probe


def baseline_verdict(results: dict[str, dict[str, Any]], baseline: dict[str, Any] | None,
                     metric: str) -> str | None:
    """One sentence: does the adapter beat the linear probe on ``metric`` (test, else valid)?

    None when there is no probe or no finite value to compare.

    Examples:
        >>> res = {"test": {"weighted_f1": 0.40, "n": 15}}
        >>> baseline_verdict(res, {"test": {"weighted_f1": 0.55}}, "weighted_f1")
        'the linear probe beats the adapter on test (Weighted F1 55.00 against 40.00, 15 samples): the LLM adds nothing here yet'
    """
    if not baseline:
        return None
    split = next((s for s in ("test", "valid") if s in results and isinstance(baseline.get(s), dict)), None)
    if split is None:
        return None
    mine, theirs = results[split].get(metric), baseline[split].get(metric)
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in (mine, theirs)):
        return None
    name, higher = METRIC_INFO.get(metric, (metric, True))
    n = results[split].get("n")
    where = f"on {split} ({name} {{}} against {{}}" + (f", {n} samples)" if n else ")")
    if mine == theirs:
        return f"the adapter ties with the linear probe {where.format(_fmt(metric, mine), _fmt(metric, theirs))}"
    if (mine > theirs) == higher:
        return f"the adapter beats the linear probe {where.format(_fmt(metric, mine), _fmt(metric, theirs))}"
    return (f"the linear probe beats the adapter {where.format(_fmt(metric, theirs), _fmt(metric, mine))}: "
            "the LLM adds nothing here yet")


def write_run_report(run_dir: Path, results: dict[str, dict[str, Any]], pred, metric: str,
                     value_range: tuple[float, float] | None = None, print_table: bool = True,
                     baseline: dict[str, Any] | None = None) -> list[Path]:
    """Writes report.md and the PNGs; prints the metrics table (with the linear probe's
    columns beside the adapter's when ``baseline`` is given)."""
    out = [plot_loss_curves(read_metrics_log(run_dir / "metrics.jsonl"),
                                   run_dir / "loss_curves.png", metric=metric)]
    split = "test" if "test" in results else "valid"
    if pred.task == "classification":
        m = results[split]
        if "confusion" in m:
            out.append(plot_confusion(m["confusion"], pred.label_names, run_dir / "confusion_matrix.png",
                                             title=f"{split} split, best adapter (n={m['n']})"))
    else:
        ok = pred.parsed & np.isfinite(pred.labels)
        if ok.any():
            out.append(plot_regression_scatter(pred.values[ok], pred.labels[ok], run_dir / "scatter.png",
                                                      title=f"{split} split: predicted vs true (n={int(ok.sum())})",
                                                      value_range=value_range))
    table = with_baseline(results, baseline)
    note = f"\nprobe = {baseline['model']} (msekit.baseline), same splits.\n" if baseline else ""
    verdict = baseline_verdict(results, baseline, metric)
    note += f"\nVerdict: {verdict}.\n" if verdict else ""
    (run_dir / "report.md").write_text(metrics_markdown(table) + note)
    if print_table:
        from rich.console import Console

        console = Console()
        console.print(metrics_table(table, title=f"Best adapter ({run_dir})"))
        if pred.task == "classification" and "per_class" in results[split]:
            console.print(per_class_table(results[split], title=f"Per class ({split})"))
        if verdict:
            console.print(f"verdict: {verdict}")
        console.print("plots: " + ", ".join(str(p) for p in out))
    return out


def _summary_columns(summary: dict[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """(column names, metric -> cells) of a multi-seed summary."""
    cols: list[str] = []
    cells: dict[str, list[str]] = {}
    blocks = [(s, a) for s, a in summary.get("splits", {}).items()]
    blocks += [(f"probe {s}", a) for s, a in (summary.get("baseline") or {}).items() if isinstance(a, dict)]
    keys: list[str] = []
    for _, agg in blocks:
        keys += [k for k in agg.get("mean", {}) if k not in keys and k in METRIC_INFO]
    ref = summary.get("reference") or {}
    for name, agg in blocks:
        cols.append(f"{name} (mean ± std)")
        for k in keys:
            cells.setdefault(k, []).append(_pm(k, agg["mean"].get(k), agg["std"].get(k)))
    if ref:
        cols.append("paper")
        for k in keys:
            cells[k].append(_fmt(k, float(ref[k])) if isinstance(ref.get(k), int | float) else "")
    return cols, cells


def summary_table(summary: dict[str, Any], title: str = "Seeds"):
    """A rich Table of a multi-seed summary: mean ± std per split (and the paper's numbers)."""
    from rich.table import Table

    cols, cells = _summary_columns(summary)
    first = next(iter(summary.get("splits", {}).values()), {})
    table = Table(title=f"{title}: seeds {summary.get('seeds')} (convention: {first.get('convention', '?')})")
    table.add_column("metric")
    for c in cols:
        table.add_column(c, justify="right")
    for k, row in cells.items():
        table.add_row(METRIC_INFO[k][0], *row)
    return table


def summary_markdown(summary: dict[str, Any]) -> str:
    """The multi-seed table as Markdown (summary.md)."""
    cols, cells = _summary_columns(summary)
    lines = [f"Seeds {summary.get('seeds')}; mean ± std (population std, as MMSA). Accuracies and F1 in %.", "",
             "| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {METRIC_INFO[k][0]} | " + " | ".join(row) + " |" for k, row in cells.items()]
    if summary.get("reference"):
        lines += ["", "paper: the MSE-Adapter authors' own 5-seed re-run logs (ChatGLM3-6B-base)."]
    verdict = summary_verdict(summary)
    if verdict:
        lines += ["", f"Verdict (means over seeds): {verdict}."]
    return "\n".join(lines) + "\n"


def summary_verdict(summary: dict[str, Any]) -> str | None:
    """:func:`baseline_verdict` on a multi-seed summary's means."""
    means = {s: a.get("mean", {}) for s, a in summary.get("splits", {}).items()}
    probe = {s: a.get("mean", {}) for s, a in (summary.get("baseline") or {}).items() if isinstance(a, dict)}
    metric = summary.get("metric")
    return baseline_verdict(means, probe, metric) if metric and probe else None
