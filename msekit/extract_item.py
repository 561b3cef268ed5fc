"""Per-item extraction work: one media file -> its modalities (and the text stage's fields).

Runs in the engine's workers (see ``msekit.engines``) or in-process; never raises for a bad
file. Import these from ``msekit.extract``.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

from msekit import textstage
from msekit.errors import MediaError
from msekit.store import Modality
from msekit.tables import escape_name, is_escaped

SAMPLE_RATE = 16000


def _build_extractors(config: Any) -> dict[str, Any]:
    from msekit.extractors import base

    cfgs = config.backend_configs()
    return {kind: base.create(kind, getattr(config, "face" if kind == "video" else "audio"), cfg)
            for kind, cfg in cfgs.items()}


def process_file(sample_id: str, path: Path, extractors: dict[str, Any],
                 text_job: textstage.TextJob | None = None) -> dict[str, Any]:
    """Extract one media file; never raises for a bad file.

    Returns:
        {"id", "path", "ok": True, "duration", "modalities": {name: Modality}, "warnings",
        "text": the text stage's fields} or {"id", "path", "ok": False, "stage", "reason"}.
    """
    from msekit import media

    res: dict[str, Any] = {"id": sample_id, "path": str(path)}
    if is_escaped(str(path)):  # bytes that are not UTF-8: decoders get a UTF-8 alias
        import tempfile

        with tempfile.TemporaryDirectory(prefix="msekit-name-") as tmp:
            alias = Path(tmp) / f"input{escape_name(path.suffix)}"
            alias.symlink_to(os.path.abspath(path))
            res = process_file(sample_id, alias, extractors)
        res["path"] = str(path)
        for key in ("reason",):
            if key in res:
                res[key] = res[key].replace(str(alias), escape_name(str(path)))
        return res
    stage = "probe"
    try:
        info = media.probe(path)
        mods: dict[str, Modality] = {}
        warnings: list[str] = []
        video = extractors.get("video")
        if video is not None:
            stage = "video"
            if info.fps <= 0 or info.width <= 0:
                warnings.append(f"{sample_id}: no video stream in {path}; video length 0")
                mods["video"] = Modality.empty(len(video.feature_names))
            else:
                mods["video"] = video.extract(path, info)
                if len(mods["video"].mask) and not mods["video"].mask.any():
                    warnings.append(f"{sample_id}: no face found in any frame of {path}")
                    res["no_face"] = True
        audio, signal = extractors.get("audio"), None
        if audio is not None:
            stage = "audio"
            if not info.has_audio:
                warnings.append(f"{sample_id}: no audio stream in {path}; kept with audio length 0")
                mods["audio"] = Modality.empty(len(audio.feature_names))
                res["no_audio"] = True
            else:
                signal = media.load_audio(path, SAMPLE_RATE, info)  # (S,) float32 mono
                mods["audio"] = audio.extract(signal, SAMPLE_RATE)
        if text_job is not None and text_job.needed:
            stage = "asr"
            if signal is None and info.has_audio:
                signal = media.load_audio(path, SAMPLE_RATE, info)
            res["text"] = textstage.run(text_job, sample_id, signal, warnings)
        del signal
        res.update(ok=True, duration=float(info.duration), modalities=mods, warnings=warnings)
    except MediaError as e:
        res.update(ok=False, stage=stage, reason=str(e))
    except Exception as e:  # a backend bug must not sink a long run; the record says what
        tb = traceback.extract_tb(e.__traceback__)[-1]
        res.update(ok=False, stage=stage,
                   reason=f"{type(e).__name__}: {e} (at {Path(tb.filename).name}:{tb.lineno})")
    return res
