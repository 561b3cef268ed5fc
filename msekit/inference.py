"""Decoding a model over a dataset: ``predict_dataset`` -> :class:`Predictions`.

Shared by validation during training, ``evaluate`` and ``predict``. Two decoding modes:

- ``score`` (default): classes are ranked by the likelihood of their label strings in one
  batched forward pass (probabilities = softmax over the candidates); regression values come
  from greedy decoding constrained to number tokens, clipped into the prompt's range.
- ``generate``: the authors' free greedy generation, parsed afterwards. An answer that does
  not parse is counted and reported (value NaN / class -1), never turned into 0.0.

The dataset (``msekit.dataset.StoreDataset``) already applies the run's normalization and
modality selection, so what the model sees here is exactly what it saw in training.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from msekit.errors import MsekitError
from msekit.metrics import finite_json
from msekit.parsing import parse_class, parse_number

DECODE_MODES = ("score", "generate")


def check_device(device: str | None) -> None:
    """Refuses a CUDA device on a machine without one, in one line.

    Raises:
        MsekitError: ``device`` names CUDA and torch sees none (or not that index).
    """
    if not device or not str(device).startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise MsekitError(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                          "no GPU or a CPU-only build); use --device cpu or leave --device out")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        raise MsekitError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")


# ----------------------------------------------------------------------------- results
@dataclass
class Predictions:
    """Predictions for a set of samples.

    Attributes:
        ids: sample ids.
        task: ``regression`` or ``classification``.
        values: (N,) float values (regression; NaN = unparsed) or class indices (-1 = unparsed).
        parsed: (N,) bool, False where a generated answer could not be parsed.
        labels: (N,) true values / class indices where the store has them (NaN / -1 missing).
        probs: (N, C) class probabilities (classification with ``score``), else None.
        texts: the generated answers (``generate``), else None.
        label_names: class names (classification).
        decode: the decoding mode.
        seconds: wall time of the model calls.
        failures: inputs that could not be predicted (id, path, stage, reason), e.g. a video
            whose extraction failed.
    """

    ids: list[str]
    task: str
    values: np.ndarray
    parsed: np.ndarray
    labels: np.ndarray | None = None
    probs: np.ndarray | None = None
    texts: list[str] | None = None
    label_names: list[str] | None = None
    decode: str = "score"
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_unparsed(self) -> int:
        return int((~self.parsed).sum())

    def rows(self) -> list[dict[str, Any]]:
        """One dict per sample: id, prediction (value or class name), per-class probabilities."""
        out = []
        for i, sid in enumerate(self.ids):
            row: dict[str, Any] = {"id": sid}
            if self.task == "classification":
                k = int(self.values[i])
                row["prediction"] = self.label_names[k] if k >= 0 else None
            else:
                v = float(self.values[i])
                row["prediction"] = None if math.isnan(v) else round(v, 4)
            if self.texts is not None:
                row["answer"] = self.texts[i]
            if self.probs is not None:
                for c, name in enumerate(self.label_names or []):
                    row[f"p_{name}"] = round(float(self.probs[i, c]), 4)
            out.append(row)
        return out

    def to_csv(self) -> str:
        rows = self.rows()
        buf = io.StringIO()
        cols = list(rows[0]) if rows else ["id", "prediction"]
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
        return buf.getvalue()

    def to_json(self) -> str:
        doc = {"task": self.task, "decode": self.decode, "label_names": self.label_names,
               "n": len(self.ids), "unparsed": self.n_unparsed, "predictions": self.rows(),
               "failed": [{k: f.get(k) for k in ("path", "stage", "reason")} for f in self.failures]}
        return json.dumps(finite_json(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


@torch.no_grad()
def predict_dataset(model, ds, indices: list[int] | None = None, *, batch_size: int = 16,
                    decode: str = "score", progress: bool = False) -> Predictions:
    """Runs a :class:`~msekit.mllm.MultimodalLLM` over (part of) a StoreDataset.

    Args:
        model: the MultimodalLLM (adapter plugged in).
        ds: a ``msekit.dataset.StoreDataset``.
        indices: dataset indices to predict (default: all).
        batch_size: samples per forward pass.
        decode: ``score`` or ``generate`` (see the module docstring).
        progress: show a progress bar on stderr.

    Returns:
        :class:`Predictions` in the order of ``indices``.
    """
    from torch.utils.data import DataLoader

    from msekit.dataset import collate

    if decode not in DECODE_MODES:
        raise MsekitError(f"decode must be one of {DECODE_MODES}, received {decode!r}")
    task = model.prompt.task
    indices = list(range(len(ds))) if indices is None else list(indices)
    loader = DataLoader(ds, batch_size=batch_size, sampler=indices, collate_fn=collate)
    was_training = model.training
    model.eval()
    ids: list[str] = []
    values, parsed, labels, probs, texts = [], [], [], [], []
    seconds = 0.0
    bar = _Bar(progress, len(loader), f"predict ({decode})")
    for batch in loader:
        B = len(batch["ids"])
        ids += batch["ids"]
        y = batch.get("labels")
        labels.append(np.full(B, -1 if task == "classification" else np.nan) if y is None else y.numpy())
        t0 = time.perf_counter()
        v, ok, p, out = _decode_batch(model, batch, task, decode)
        values.append(v)
        parsed.append(ok)
        probs += [] if p is None else [p]
        texts += out
        seconds += time.perf_counter() - t0
        bar.advance()
    bar.close()
    model.train(was_training)

    def cat(xs, dt):
        return (np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    vdt = np.int64 if task == "classification" else np.float64
    return Predictions(
        ids=ids, task=task, values=cat(values, vdt), parsed=cat(parsed, bool),
        labels=cat(labels, vdt), probs=np.concatenate(probs) if probs else None,
        texts=texts if decode == "generate" else None,
        label_names=model.prompt.label_names, decode=decode, seconds=seconds,
    )


def _decode_batch(model, batch: dict[str, Any], task: str, decode: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """One batch's ``(values (B,), parsed (B,) bool, class probabilities (B, C) or None,
    generated texts ([] with decode 'score'))``."""
    if decode == "generate":
        out = model.generate(batch)
        if task == "classification":
            k = np.array([parse_class(t, model.prompt.class_strings()) for t in out])
            return k, k >= 0, None, out
        v = [parse_number(t) for t in out]
        return (np.array([math.nan if x is None else x for x in v], np.float64),
                np.array([x is not None for x in v]), None, out)
    if task == "classification":
        p = torch.softmax(model.score_classes(batch).float(), dim=-1)  # (B, C)
        return p.argmax(-1).cpu().numpy(), np.ones(len(p), bool), p.cpu().numpy(), []
    v, ok = model.predict_regression(batch)
    return v.numpy(), ok.numpy(), None, []


class _Bar:
    """A rich progress bar on stderr (or nothing)."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.p = None
        if enabled and total:
            from msekit.progress import start_bar

            self.p = start_bar(label, total, transient=True)
            self.t = self.p.task_ids[0]

    def advance(self) -> None:
        if self.p is not None:
            self.p.update(self.t, advance=1)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()


def concat_predictions(parts: list[Predictions]) -> Predictions:
    """Predictions of several shards (ranks) in order, as one."""
    if len(parts) == 1:
        return parts[0]
    p0 = parts[0]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    return Predictions(
        ids=[i for p in parts for i in p.ids], task=p0.task, values=cat("values"), parsed=cat("parsed"),
        labels=cat("labels"), probs=cat("probs") if p0.probs is not None else None,
        texts=[t for p in parts for t in p.texts] if p0.texts is not None else None,
        label_names=p0.label_names, decode=p0.decode, seconds=sum(p.seconds for p in parts))
