"""Prediction with a trained run: from a store or from raw videos to one answer per sample.

Two decoding modes:

- ``score`` (default): classes are ranked by the likelihood of their label strings in one
  batched forward pass (probabilities = softmax over the candidates); regression values come
  from greedy decoding constrained to number tokens, clipped into the prompt's range.
- ``generate``: the authors' free greedy generation, parsed afterwards. An answer that does
  not parse is counted and reported (value NaN / class -1), never turned into 0.0.

Videos are extracted on the fly into a temporary store with exactly the extraction settings
recorded in the adapter's config, so features match what the adapter was trained on.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msekit.errors import MsekitError

DECODE_MODES = ("score", "generate")
STORE_SUFFIXES = (".h5", ".hdf5")


# ----------------------------------------------------------------------------- batch transform
@dataclass
class BatchTransform:
    """What the trainer does to every batch before the model, recorded in the adapter's meta so
    that prediction does the same.

    Attributes:
        norm: modality -> (mean (D,), std (D,)) from the training split; frames are
            standardized, while all-zero rows (padding, masked frames such as no face) stay 0.
        drop: modalities whose lengths are zeroed (e.g. ``["audio", "video"]`` for text-only).
    """

    norm: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._t = {m: (torch.as_tensor(np.asarray(mu), dtype=torch.float32),
                       torch.as_tensor(1.0 / np.asarray(sd), dtype=torch.float32))
                   for m, (mu, sd) in self.norm.items()}

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = dict(batch)
        for m in ("audio", "video"):
            x = batch.get(m)
            if m in self.drop:
                batch[f"{m}_lengths"] = torch.zeros_like(batch[f"{m}_lengths"])
                if x is not None:
                    batch[m] = torch.zeros_like(x)
                continue
            if x is None or m not in self._t:
                continue
            mean, inv_std = self._t[m]
            real = (x != 0).any(dim=-1, keepdim=True)  # (B, T, 1): padding / masked rows are all 0
            batch[m] = (x - mean) * inv_std * real  # (B, T, D)
        return batch

    def to_dict(self) -> dict[str, Any]:
        return {"norm": {m: {"mean": np.asarray(mu).tolist(), "std": np.asarray(sd).tolist()}
                         for m, (mu, sd) in self.norm.items()},
                "drop": list(self.drop)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> BatchTransform:
        d = d or {}
        norm = {m: (np.asarray(v["mean"], np.float32), np.asarray(v["std"], np.float32))
                for m, v in (d.get("norm") or {}).items()}
        return cls(norm=norm, drop=list(d.get("drop") or []))


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
               "n": len(self.ids), "unparsed": self.n_unparsed, "predictions": self.rows()}
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def parse_class(text: str, label_strings: list[str]) -> int:
    """Class index of a generated answer: the label string it starts with (longest match), -1 if
    none; e.g. ``"3"`` -> 3 for index labels, ``"joy."`` -> the index of ``joy``."""
    t = (text or "").strip().lower()
    best, best_len = -1, 0
    for k, s in enumerate(label_strings):
        s = s.strip().lower()
        if s and t.startswith(s) and len(s) > best_len:
            best, best_len = k, len(s)
    return best


@torch.no_grad()
def predict_dataset(model, ds, indices: list[int] | None = None, *, batch_size: int = 16,
                    decode: str = "score", transform: BatchTransform | None = None,
                    progress: bool = False) -> Predictions:
    """Runs a :class:`~msekit.mllm.MultimodalLLM` over (part of) a StoreDataset.

    Args:
        model: the MultimodalLLM (adapter plugged in).
        ds: a ``msekit.dataset.StoreDataset``.
        indices: dataset indices to predict (default: all).
        batch_size: samples per forward pass.
        decode: ``score`` or ``generate`` (see the module docstring).
        transform: the run's batch transform (normalization, dropped modalities).
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
        if transform is not None:
            batch = transform(batch)
        B = len(batch["ids"])
        ids += batch["ids"]
        y = batch.get("labels")
        if y is None:
            labels.append(np.full(B, -1 if task == "classification" else np.nan))
        else:
            labels.append(y.numpy())
        t0 = time.perf_counter()
        if task == "classification":
            if decode == "score":
                logp = model.score_classes(batch).float()  # (B, C)
                p = torch.softmax(logp, dim=-1)
                probs.append(p.cpu().numpy())
                values.append(p.argmax(-1).cpu().numpy())
                parsed.append(np.ones(B, bool))
            else:
                out = model.generate(batch)
                k = np.array([parse_class(t, model.prompt.class_strings()) for t in out])
                texts += out
                values.append(k)
                parsed.append(k >= 0)
        else:
            if decode == "score":
                v, ok = model.predict_regression(batch)
                values.append(v.numpy())
                parsed.append(ok.numpy())
            else:
                from msekit.mllm import parse_number

                out = model.generate(batch)
                v = [parse_number(t) for t in out]
                texts += out
                values.append(np.array([math.nan if x is None else x for x in v], np.float64))
                parsed.append(np.array([x is not None for x in v]))
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


# ----------------------------------------------------------------------------- runs
@dataclass
class Run:
    """A trained run loaded for inference: the model, its meta and its batch transform."""

    model: Any
    meta: dict[str, Any]
    transform: BatchTransform
    path: Path

    def view(self):
        """The ViewConfig the adapter was trained with (task and label set fixed)."""
        from msekit.dataset import ViewConfig

        v = {k: x for k, x in (self.meta.get("view") or {}).items() if k in ("align", "max_len", "pad_to")}
        # Labels outside the adapter's classes (it may have been trained on a subset) are
        # treated as missing: such samples are still predicted, but not scored.
        return ViewConfig(**v, normalize=False, task=self.meta["task"],
                          label_names=self.meta.get("label_names"), unknown_labels="ignore")


def adapter_dir(path: str | Path) -> Path:
    """The adapter folder of a run folder (``<run>/adapter``), or ``path`` itself if it is one."""
    p = Path(path)
    if (p / "adapter" / "adapter_config.json").is_file():
        return p / "adapter"
    if (p / "adapter_config.json").is_file():
        return p
    raise MsekitError(f"{p}: not a run folder (no adapter/adapter_config.json); train one with `msekit train`")


def load_run(path: str | Path, *, llm=None, tokenizer=None, device: str | None = None,
             dtype: str | None = None, trust_remote_code: bool = False) -> Run:
    """Loads a run (or adapter folder) with its base LLM.

    Args:
        path: run folder or adapter folder.
        llm, tokenizer: an already loaded LLM to plug the adapter into (default: load the
            ``base_llm`` recorded in the adapter's config).
        device, dtype: for loading the LLM.
        trust_remote_code: allow the LLM repository's code.

    Raises:
        MsekitError: no adapter, or an LLM of another width.
    """
    from msekit.adapter import read_adapter_meta
    from msekit.llm import load_llm
    from msekit.mllm import MultimodalLLM

    folder = adapter_dir(path)
    meta = read_adapter_meta(folder)
    if llm is None:
        name = meta.get("llm_name") or meta.get("base_llm")
        llm, tokenizer = load_llm(name, device=device, dtype=dtype,
                                  trust_remote_code=trust_remote_code or bool(meta.get("trust_remote_code")))
    model = MultimodalLLM.from_adapter(folder, llm, tokenizer)
    return Run(model=model, meta=meta, transform=BatchTransform.from_dict(meta.get("transform")), path=folder)


def check_store_features(run: Run, store: str | Path) -> None:
    """Refuses a store whose feature names differ from the adapter's (naming the modality)."""
    from msekit.store import StoreReader

    want = run.meta.get("feature_names") or {}
    with StoreReader(store) as r:
        for m, names in want.items():
            if m in run.transform.drop:
                continue
            if m not in r.modalities:
                raise MsekitError(f"{store}: has no {m} features; the adapter was trained with {m} "
                                  f"({len(names)} features)")
            have = r.feature_names(m)
            if list(have) != list(names):
                raise MsekitError(f"{store}: {m} features differ from the adapter's ({len(have)} vs "
                                  f"{len(names)}: extract with the settings recorded in the adapter)")


def extract_videos(run: Run, videos: list[str | Path], out: str | Path, *, transcripts=None,
                   workers: int = 1, progress: bool = False) -> Path:
    """Extracts videos with the extraction settings recorded in the adapter into ``out``."""
    from msekit.extract import ExtractConfig, extract

    settings = run.meta.get("store_settings") or {}
    cfg = dict(settings.get("extract") or {})
    if not cfg:
        raise MsekitError("the adapter records no extraction settings (trained on an imported store?); "
                          "extract the videos yourself and pass the store")
    if cfg.get("face_model"):
        cfg["face_model"] = None  # the recorded file name; the backend's default model is that file
    if cfg.get("asr") == "none":  # videos without a transcript are transcribed (recorded model)
        cfg["asr"] = "auto"
    summary = extract([str(v) for v in videos], out, ExtractConfig(**cfg), transcripts=transcripts,
                      workers=workers, progress=progress)
    if not summary.ok:
        from msekit.store import StoreReader

        with StoreReader(out) as r:
            fails = r.failures()
        msg = "; ".join(f"{f['path']}: {f['reason']}" for f in fails[:3])
        raise MsekitError(f"feature extraction failed for {len(fails)} input(s): {msg}")
    return Path(out)


def predict(run: Run, inputs: list[str | Path], *, decode: str = "score", batch_size: int = 16,
            split: str | None = None, transcripts=None, workers: int = 1,
            progress: bool = False) -> Predictions:
    """Predicts every sample of a store, or of video files extracted on the fly.

    Args:
        run: from :func:`load_run`.
        inputs: one store (``.h5``), or video files / folders.
        decode: ``score`` or ``generate``.
        batch_size: samples per forward pass.
        split: with a store, predict only this split (default: all samples).
        transcripts: with videos, a transcripts file (``msekit.inputs`` formats); videos without
            one are transcribed with the ASR model and language the adapter's store recorded.
        workers: extraction processes.
        progress: progress bars on stderr.

    Returns:
        :class:`Predictions`.
    """
    from msekit.dataset import StoreDataset

    if decode not in DECODE_MODES:
        raise MsekitError(f"decode must be one of {DECODE_MODES}, received {decode!r}")
    inputs = [Path(x) for x in inputs]
    if not inputs:
        raise MsekitError("no inputs: give a store (.h5) or video files")
    stores = [p for p in inputs if p.suffix.lower() in STORE_SUFFIXES]
    if stores and len(inputs) > 1:
        raise MsekitError("give either one store or video files, not both / several stores")
    with tempfile.TemporaryDirectory(prefix="msekit-predict-") as tmp:
        if stores:
            store = stores[0]
            if not store.is_file():
                raise MsekitError(f"{store}: no such store")
        else:
            store = extract_videos(run, inputs, Path(tmp) / "features.h5", transcripts=transcripts,
                                   workers=workers, progress=progress)
        check_store_features(run, store)
        ds = StoreDataset(store, split, run.view())
        return predict_dataset(run.model, ds, batch_size=batch_size, decode=decode,
                               transform=run.transform, progress=progress)

