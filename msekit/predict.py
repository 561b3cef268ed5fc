"""Prediction with a trained run: from a store or from raw videos to one answer per sample.

``predict(run, inputs)`` takes a run folder (or a loaded :class:`Run`) and either one store or
video files. Videos are extracted on the fly into a temporary store with exactly the
extraction settings recorded in the adapter's config, so features match what the adapter was
trained on; a video that fails is reported (``Predictions.failures``) and the others are still
predicted. The normalization and modality selection the adapter was trained with are applied
by the dataset (``Run.view()``), as in training. Decoding: ``msekit.inference``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msekit.errors import MsekitError
from msekit.inference import DECODE_MODES, Predictions, check_device, predict_dataset

STORE_SUFFIXES = (".h5", ".hdf5")


# ----------------------------------------------------------------------------- runs
@dataclass
class Run:
    """A trained run loaded for inference: the model and its meta (``adapter_config.json``)."""

    model: Any
    meta: dict[str, Any]
    path: Path

    @property
    def dropped(self) -> list[str]:
        """Modalities the adapter was trained without (read as missing)."""
        return list((self.meta.get("transform") or {}).get("drop") or [])

    def view(self):
        """The ViewConfig the adapter was trained with: its alignment, truncation, split, task,
        classes, normalization statistics and modalities."""
        from msekit.dataset import MODALITIES, ViewConfig

        keys = ("align", "max_len", "pad_to", "split_seed", "split_ratios")
        v = {k: x for k, x in (self.meta.get("view") or {}).items() if k in keys and x is not None}
        norm = {m: (np.asarray(x["mean"], np.float32), np.asarray(x["std"], np.float32))
                for m, x in ((self.meta.get("transform") or {}).get("norm") or {}).items()}
        # Labels outside the adapter's classes (it may have been trained on a subset) are
        # treated as missing: such samples are still predicted, but not scored.
        return ViewConfig(**v, norm=norm, modalities=[m for m in MODALITIES if m not in self.dropped],
                          task=self.meta["task"], label_names=self.meta.get("label_names"),
                          unknown_labels="ignore")


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

    check_device(device)
    folder = adapter_dir(path)
    meta = read_adapter_meta(folder)
    if llm is None:
        name = meta.get("llm_name") or meta.get("base_llm")
        llm, tokenizer = load_llm(name, device=device, dtype=dtype,
                                  trust_remote_code=trust_remote_code or bool(meta.get("trust_remote_code")))
    model = MultimodalLLM.from_adapter(folder, llm, tokenizer)
    return Run(model=model, meta=meta, path=folder)


def check_store_features(run: Run, store: str | Path) -> None:
    """Refuses a store whose feature names differ from the adapter's (naming the modality)."""
    from msekit.store import StoreReader

    want = run.meta.get("feature_names") or {}
    with StoreReader(store) as r:
        for m, names in want.items():
            if m in run.dropped:
                continue
            if m not in r.modalities:
                raise MsekitError(f"{store}: has no {m} features; the adapter was trained with {m} "
                                  f"({len(names)} features)")
            have = r.feature_names(m)
            if list(have) != list(names):
                raise MsekitError(f"{store}: {m} features differ from the adapter's ({len(have)} vs "
                                  f"{len(names)}: extract with the settings recorded in the adapter)")


def extract_videos(run: Run, videos: list[str | Path], out: str | Path, *, transcripts=None,
                   workers: int = 1, progress: bool = False) -> list[dict[str, Any]]:
    """Extracts videos with the extraction settings recorded in the adapter into ``out``.

    Returns:
        The failures (id, path, stage, reason), one per video that could not be extracted; the
        other videos are in the store.
    """
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
    if summary.ok:
        return []
    from msekit.store import StoreReader

    with StoreReader(out) as r:
        return r.failures()


def predict(run: Run | str | Path, inputs: list[str | Path], *, decode: str = "score", batch_size: int = 16,
            split: str | None = None, transcripts=None, workers: int = 1, device: str | None = None,
            progress: bool = False) -> Predictions:
    """Predicts every sample of a store, or of video files extracted on the fly.

    Args:
        run: a run folder (or adapter folder), or a :class:`Run` from :func:`load_run`.
        inputs: one store (``.h5``), or video files / folders.
        decode: ``score`` or ``generate``.
        batch_size: samples per forward pass.
        split: with a store, predict only this split (default: all samples).
        transcripts: with videos, a transcripts file (``msekit.inputs`` formats); videos without
            one are transcribed with the ASR model and language the adapter's store recorded.
        workers: extraction processes.
        device: where to load the LLM when ``run`` is a folder.
        progress: progress bars on stderr.

    Returns:
        :class:`Predictions` of every good input; ``failures`` lists the videos that could not
        be extracted (one record each).

    Raises:
        MsekitError: no inputs, a missing store, features that differ from the adapter's.
    """
    from msekit.tokenfp import dataset_for_model

    if decode not in DECODE_MODES:
        raise MsekitError(f"decode must be one of {DECODE_MODES}, received {decode!r}")
    inputs = [Path(x) for x in inputs]
    if not inputs:
        raise MsekitError("no inputs: give a store (.h5) or video files")
    stores = [p for p in inputs if p.suffix.lower() in STORE_SUFFIXES]
    if stores and len(inputs) > 1:
        raise MsekitError("give either one store or video files, not both / several stores")
    if stores and not stores[0].is_file():
        raise MsekitError(f"{stores[0]}: no such store")
    if not isinstance(run, Run):
        run = load_run(run, device=device)
    with tempfile.TemporaryDirectory(prefix="msekit-predict-") as tmp:
        failures: list[dict[str, Any]] = []
        store = stores[0] if stores else Path(tmp) / "features.h5"
        if not stores:
            failures = extract_videos(run, inputs, store, transcripts=transcripts, workers=workers,
                                      progress=progress)
        check_store_features(run, store)
        ds = dataset_for_model(store, split, run.view(), run.model)
        pred = predict_dataset(run.model, ds, batch_size=batch_size, decode=decode, progress=progress)
    pred.failures = failures
    return pred


from msekit import callable_module  # noqa: E402

callable_module(__name__)  # msekit.predict(...) calls predict(...)
