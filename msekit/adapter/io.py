"""Adapter folders, as PEFT writes them: ``adapter_config.json`` + ``adapter_model.safetensors``.

Only the adapter's weights are written (a few MB), never the LLM's; no pickle is used.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from msekit.adapter.config import AdapterConfig
from msekit.adapter.model import MSEAdapter
from msekit.errors import MsekitError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT_NAME = "msekit-mse-adapter"
FORMAT_VERSION = 1
_RESERVED = ("adapter", "format", "format_version")


def save_adapter(out_dir: str | Path, adapter: MSEAdapter, meta: dict[str, Any] | None = None) -> Path:
    """Writes an adapter folder.

    Args:
        out_dir: Folder to create (or overwrite the two files in).
        adapter: The trained adapter.
        meta: Everything a later stage needs without repeated flags, JSON-serializable, e.g.
            ``base_llm``, ``llm_hidden_size``, ``task``, ``label_names``, ``prompt``,
            ``audio_feature``, ``video_feature``, ``audio_dim``, ``video_dim``, ``store``.

    Returns:
        The folder.

    Raises:
        MsekitError: If ``meta`` uses a reserved key or is not JSON-serializable.
    """
    meta = dict(meta or {})
    clash = sorted(set(meta) & set(_RESERVED))
    if clash:
        raise MsekitError(f"meta: keys {clash} are reserved for the adapter file; rename them")
    cfg = adapter.config
    if "llm_hidden_size" in meta and int(meta["llm_hidden_size"]) != cfg.llm_hidden_size:
        raise MsekitError(
            f"meta llm_hidden_size {meta['llm_hidden_size']} differs from the adapter's {cfg.llm_hidden_size}"
        )
    doc = {"adapter": cfg.to_dict(), "format": FORMAT_NAME, "format_version": FORMAT_VERSION, **meta}
    doc.setdefault("llm_hidden_size", cfg.llm_hidden_size)
    doc.setdefault("audio_dim", cfg.audio_dim)
    doc.setdefault("video_dim", cfg.video_dim)
    try:
        text = json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False)
    except TypeError as e:
        raise MsekitError(f"meta must be JSON-serializable: {e}") from e
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # clone(): safetensors refuses tensors that share storage; .cpu() keeps the file device-free
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in adapter.state_dict().items()}
    # Temp files renamed into place: a full disk or a kill never leaves a half-written adapter.
    tmp_w, tmp_c = out / f".{WEIGHTS_NAME}.tmp", out / f".{CONFIG_NAME}.tmp"
    try:
        save_file(tensors, str(tmp_w), metadata={"format": "pt", "msekit": FORMAT_NAME})
        tmp_c.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp_w, out / WEIGHTS_NAME)
        os.replace(tmp_c, out / CONFIG_NAME)
    except OSError as e:
        for t in (tmp_w, tmp_c):
            with contextlib.suppress(OSError):  # a read-only folder holds no temp file
                t.unlink(missing_ok=True)
        raise MsekitError(f"cannot write the adapter to {out} ({e.strerror or e}); free space or "
                          "choose another --out") from None
    return out


def read_adapter_meta(path: str | Path) -> dict[str, Any]:
    """Reads ``adapter_config.json`` of an adapter folder.

    Raises:
        MsekitError: If the folder or file is missing or not an msekit adapter.
    """
    folder = Path(path)
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.is_file():
        raise MsekitError(f"not an adapter folder: {folder} has no {CONFIG_NAME}")
    try:
        doc = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MsekitError(f"{cfg_path} is not valid JSON ({e}); it is truncated or damaged: copy "
                          "the adapter folder again, or retrain") from None
    if not isinstance(doc, dict):
        raise MsekitError(f"{cfg_path} holds a JSON {type(doc).__name__}, not an object; copy the "
                          "adapter folder again, or retrain")
    if doc.get("format") != FORMAT_NAME or "adapter" not in doc:
        raise MsekitError(f"{cfg_path} is not an msekit adapter config (format {doc.get('format')!r})")
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise MsekitError(
            f"{cfg_path} has format_version {doc['format_version']}; this msekit reads <= {FORMAT_VERSION}"
        )
    return doc


def _check_features(meta: dict[str, Any], cfg: AdapterConfig, feature_spec: dict[str, Any]) -> None:
    trained = dict(meta)
    trained["audio_dim"], trained["video_dim"] = cfg.audio_dim, cfg.video_dim
    problems = []
    for key in sorted(feature_spec):
        if key not in trained:
            continue
        have, want = feature_spec[key], trained[key]
        if key in ("audio_dim", "video_dim"):
            have, want = int(have or 0), int(want or 0)
        if have != want:
            problems.append(f"{key}: adapter trained with {want!r}, given {have!r}")
    if problems:
        raise MsekitError("features do not match the adapter: " + "; ".join(problems))


def load_adapter(
    path: str | Path,
    *,
    llm_hidden_size: int | None = None,
    feature_spec: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> tuple[MSEAdapter, dict[str, Any]]:
    """Loads an adapter folder and checks it against the LLM and features it will meet.

    Args:
        path: The adapter folder.
        llm_hidden_size: Width of the LLM it will be plugged into; checked when given.
        feature_spec: Features it will read, e.g. ``{"audio_dim": 25, "video_dim": 35,
            "audio_feature": "egemaps", "video_feature": "facemesh"}``; every key that the
            adapter's meta also holds must match.
        device: Where to put the weights (default CPU).

    Returns:
        ``(adapter, meta)``; ``meta`` is the whole ``adapter_config.json``.

    Raises:
        MsekitError: On a missing file, a width or feature mismatch (naming both sides), or
            weights that do not fit the config.
    """
    folder = Path(path)
    meta = read_adapter_meta(folder)
    try:
        cfg = AdapterConfig.from_dict(meta["adapter"])
    except (MsekitError, TypeError, ValueError) as e:
        raise MsekitError(f"{folder / CONFIG_NAME}: bad 'adapter' entry ({e}); retrain, or "
                          "upgrade msekit if a newer one wrote it") from None
    if llm_hidden_size is not None and int(llm_hidden_size) != cfg.llm_hidden_size:
        raise MsekitError(
            f"LLM width mismatch: adapter {folder} was trained for llm_hidden_size={cfg.llm_hidden_size} "
            f"(base_llm {meta.get('base_llm')!r}), the LLM given has {llm_hidden_size}"
        )
    if feature_spec:
        _check_features(meta, cfg, feature_spec)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise MsekitError(f"adapter weights missing: {weights}")
    adapter = MSEAdapter(cfg)
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise MsekitError(
            f"{weights}: not a readable safetensors file ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); it is truncated or damaged: copy the "
            "adapter folder again, or retrain"
        ) from None
    own = adapter.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise MsekitError(
            f"{weights} does not fit its config: missing {missing}, unexpected {unexpected}; "
            f"the weights and {CONFIG_NAME} come from different runs: retrain, or restore the pair"
        )
    for name, p in own.items():
        if p.shape != state[name].shape:
            raise MsekitError(
                f"{weights}: {name} has shape {tuple(state[name].shape)}, but {CONFIG_NAME} "
                f"(llm_hidden_size={cfg.llm_hidden_size}, audio_dim={cfg.audio_dim}, "
                f"video_dim={cfg.video_dim}) needs {tuple(p.shape)}; the weights and the config "
                "come from different runs: retrain, or restore the matching pair"
            )
    adapter.load_state_dict(state, strict=True)
    if device is not None:
        adapter.to(device)
    return adapter, meta
