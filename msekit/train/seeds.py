"""Multi-seed runs, the paper's protocol: one run per seed, then mean +- std over the seeds.

``train_seeds(config)`` trains ``config.seeds`` one after the other into ``OUT/seed-<s>/``
(each an ordinary, resumable run folder; a finished seed is not trained again), with one LLM
loaded for all, then writes ``OUT/summary.json`` and ``OUT/summary.md``: every metric of every
split as mean and std over the seeds (MMSA: ``np.mean`` / ``np.std``), beside the paper's
reported numbers when the preset is one of the paper's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msekit.errors import MsekitError
from msekit.metrics import aggregate_metrics, finite_json
from msekit.train.config import TrainConfig, for_seed, reference_results


@dataclass
class SeedsResult:
    """What :func:`train_seeds` returns."""

    out: Path
    seeds: list[int]
    summary: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


def seed_dir(out: str | Path, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def train_seeds(config: TrainConfig, *, llm=None, tokenizer=None) -> SeedsResult:
    """Trains every seed of ``config.seeds`` and summarizes them.

    Raises:
        MsekitError: no seeds, or a seed's run fails (the seeds before it are kept).
    """
    from msekit.train.loop import load_frozen_llm, train

    if not config.seeds:
        raise MsekitError("train_seeds needs config.seeds (e.g. --seeds 1111,2222 or --seeds paper)")
    out = Path(config.out)
    res = SeedsResult(out=out, seeds=list(config.seeds))
    finals: dict[str, dict[str, Any]] = {}
    for i, seed in enumerate(config.seeds):
        d = seed_dir(out, seed)
        done = d / "final_metrics.json"
        if not done.is_file() or config.overwrite:
            if config.progress:
                print(f"seed {seed} ({i + 1}/{len(config.seeds)}) -> {d}")
            if llm is None:
                llm, tokenizer = load_frozen_llm(config)
            r = train(for_seed(config, seed, str(d)), llm=llm, tokenizer=tokenizer)
            if r.interrupted:
                res.interrupted = True
                return res
        finals[str(seed)] = json.loads(done.read_text())
    res.summary = summarize(finals, config.preset)
    (out / "summary.json").write_text(json.dumps(finite_json(res.summary), indent=2, allow_nan=False) + "\n")
    from msekit.report import summary_markdown, summary_table, summary_verdict

    (out / "summary.md").write_text(summary_markdown(res.summary))
    if config.progress:
        from rich.console import Console

        Console().print(summary_table(res.summary, title=f"{len(finals)} seeds ({out})"))
        verdict = summary_verdict(res.summary)
        if verdict:
            Console().print(f"verdict (means over seeds): {verdict}")
    return res


def summarize(finals: dict[str, dict[str, Any]], preset: str | None = None) -> dict[str, Any]:
    """seed -> final_metrics.json of each seed, as mean +- std per split (and the probe's)."""
    first = next(iter(finals.values()))
    splits = list(first.get("splits", {}))
    doc: dict[str, Any] = {"seeds": [int(s) for s in finals], "metric": first.get("metric"), "preset": preset,
                           "splits": {}}
    for split in splits:
        doc["splits"][split] = aggregate_metrics({s: f["splits"][split] for s, f in finals.items()
                                                  if split in f.get("splits", {})})
        for m in doc["splits"][split]["seeds"].values():
            m.pop("per_class", None)
            m.pop("confusion", None)
    base = {s: f["baseline"] for s, f in finals.items() if f.get("baseline")}
    if base:
        one = next(iter(base.values()))
        doc["baseline"] = {"model": one.get("model")} | {
            split: aggregate_metrics({s: b[split] for s, b in base.items() if split in b})
            for split in splits if split in one}
    ref = reference_results(preset)
    if ref:
        doc["reference"] = ref
    return doc
