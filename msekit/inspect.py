"""Look into a feature store: a summary (text or JSON) and one sample's timeline as a PNG."""

from __future__ import annotations

import json
import os
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from msekit.store import Sample, StoreReader

_MAX_LABEL_CLASSES = 30  # more distinct labels than this, all numeric: show statistics instead


def _label_summary(labels: list[str]) -> dict[str, Any]:
    counts = Counter(labels)
    values = [v for v in labels if v != ""]
    try:
        nums = np.array([float(v) for v in values], np.float64)
    except ValueError:
        nums = None
    if nums is not None and len(set(values)) > _MAX_LABEL_CLASSES:
        return {"kind": "numeric", "n": int(len(nums)), "unlabelled": counts.get("", 0),
                "min": float(nums.min()), "max": float(nums.max()), "mean": float(nums.mean())}
    return {"kind": "classes", "counts": dict(sorted(counts.items()))}


def inspect_store(path: str | os.PathLike) -> dict[str, Any]:
    """Summarize a store as a JSON-ready dict.

    Returns:
        {path, schema_version, msekit_version, created_utc, samples, hours, settings_hash,
        settings, splits, labels, text, modalities: {m: {dim, feature_names, extractor,
        extractor_version, rows, missing, masked_share, mean_rows}}, failures}.

    Raises:
        StoreError: the file is not a readable store.
    """
    with StoreReader(path) as r:
        attrs = r.f.attrs
        duration = r.column("duration")
        mods: dict[str, Any] = {}
        for m in r.modalities:
            lengths = r.lengths(m)
            ma = r.modality_attrs(m)
            n_rows = int(lengths.sum())
            mask = r.f[m]["mask"][:n_rows] if n_rows else np.zeros(0, np.uint8)
            mods[m] = {
                "dim": len(r.feature_names(m)),
                "feature_names": r.feature_names(m),
                "extractor": str(ma.get("extractor", "")),
                "extractor_version": str(ma.get("extractor_version", "")),
                "rows": n_rows,
                "mean_rows": float(lengths.mean()) if len(lengths) else 0.0,
                "missing": int((lengths == 0).sum()),
                "masked_share": float(1.0 - mask.mean()) if n_rows else 0.0,
            }
        texts = r.column("text")
        return {
            "path": str(r.path),
            "schema_version": int(attrs["schema_version"]),
            "msekit_version": str(attrs.get("msekit_version", "")),
            "created_utc": str(attrs.get("created_utc", "")),
            "samples": r.n,
            "hours": float(duration.sum() / 3600),
            "settings_hash": r.settings_hash,
            "settings": r.settings,
            "splits": dict(sorted(Counter(r.column("split").tolist()).items())),
            "labels": _label_summary(r.column("label").tolist()),
            "text": {"with_text": int(sum(bool(t) for t in texts)),
                     "tokens": int(r.lengths("token").sum()),
                     "with_word_times": int((r.lengths("word") > 0).sum()), **_asr_summary(r)},
            "modalities": mods,
            "failures": r.failures(),
        }


def _asr_summary(r: StoreReader) -> dict[str, Any]:
    """Text sources and ASR confidence of a store ({} for stores older than these columns)."""
    s = r.f["samples"]
    if "text_source" not in s:
        return {}
    src = r.column("text_source").tolist()
    asr = np.array([x == "asr" for x in src], bool)
    lp = r.column("asr_logprob")[asr] if asr.any() else np.zeros(0)
    lp = lp[np.isfinite(lp)]
    return {"source": dict(sorted(Counter(x or "none" for x in src).items())),
            "asr_models": sorted({m for m in r.column("asr_model").tolist() if m}),
            "asr_empty": int(sum(1 for k, t in zip(asr, r.column("text"), strict=True)
                                 if k and not t)),
            "asr_mean_logprob": float(lp.mean()) if len(lp) else None}


def sample_summary(path: str | os.PathLike, sample_id: str) -> dict[str, Any]:
    """One sample's fields, lengths and per-feature means (JSON-ready).

    Raises:
        StoreError: no such store or sample.
    """
    with StoreReader(path) as r:
        s = r.sample(sample_id)
        out: dict[str, Any] = {"id": s.id, "source": s.source, "text": s.text, "label": s.label,
                               "split": s.split, "group": s.group, "duration": s.duration,
                               "tokens": int(len(s.token_ids)), "words": len(s.words),
                               "text_source": s.text_source, "asr_model": s.asr_model,
                               "language": s.language, "modalities": {}}
        if s.text_source == "asr" or s.asr_model:
            probs = s.probs()
            out["asr"] = {"avg_logprob": _num(s.asr_logprob), "no_speech_prob": _num(s.asr_no_speech),
                          "mean_word_prob": _num(float(probs.mean())) if len(probs) else None}
        for m, mod in s.modalities.items():
            out["modalities"][m] = {
                "rows": int(len(mod.data)), "valid_rows": int(mod.mask.sum()),
                "mean": {n: round(float(v), 4) for n, v in zip(
                    r.feature_names(m), mod.data[mod.mask].mean(0) if mod.mask.any()
                    else np.zeros(mod.data.shape[1]), strict=True)},
            }
        return out


def _num(x: float) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None


def format_summary(info: dict[str, Any]) -> str:
    """Human-readable text of ``inspect_store`` or ``sample_summary`` output."""
    if "settings_hash" not in info:  # a sample
        lines = [f"sample {info['id']!r}  ({info['source']})",
                 f"  label {info['label']!r}  split {info['split'] or '-'}  group "
                 f"{info['group'] or '-'}  duration {info['duration']:.2f} s",
                 f"  text {info['text']!r}  ({info['tokens']} tokens, {info['words']} timed words, "
                 f"source {info.get('text_source') or '-'})"]
        if "asr" in info:
            a = info["asr"]
            lines.append(f"  ASR {info['asr_model']} ({info['language'] or '?'}): avg log-prob "
                         f"{a['avg_logprob']}, no-speech prob {a['no_speech_prob']}, mean word "
                         f"prob {a['mean_word_prob']}")
        for m, d in info["modalities"].items():
            lines.append(f"  {m}: {d['rows']} rows ({d['valid_rows']} valid)")
            means = ", ".join(f"{k}={v:g}" for k, v in d["mean"].items())
            lines += textwrap.wrap(f"mean: {means}", 96, initial_indent="    ",
                                   subsequent_indent="      ")
        if "plot" in info:
            lines.append(f"  timeline written to {info['plot']}")
        return "\n".join(lines)
    lines = [f"{info['path']}: {info['samples']} samples, {info['hours']:.3f} h of media "
             f"(schema {info['schema_version']}, msekit {info['msekit_version']}, "
             f"{info['created_utc']})",
             f"settings hash {info['settings_hash']}",
             "splits: " + (", ".join(f"{k or '(none)'} {v}" for k, v in info["splits"].items())
                           or "-")]
    lab = info["labels"]
    if lab["kind"] == "numeric":
        lines.append(f"labels: numeric, n={lab['n']}, min {lab['min']:g}, max {lab['max']:g}, "
                     f"mean {lab['mean']:.3f}, unlabelled {lab['unlabelled']}")
    else:
        lines.append("labels: " + (", ".join(f"{k or '(none)'} {v}" for k, v in
                                             lab["counts"].items()) or "-"))
    t = info["text"]
    lines.append(f"text: {t['with_text']} with text, {t['tokens']} tokens, "
                 f"{t['with_word_times']} with word times")
    if "source" in t:
        lines.append("  source: " + ", ".join(f"{k} {v}" for k, v in t["source"].items())
                     + (f"; ASR {'/'.join(t['asr_models'])}, {t['asr_empty']} empty (no speech), "
                        f"mean avg log-prob {t['asr_mean_logprob']:.3f}"
                        if t["asr_mean_logprob"] is not None else ""))
    for m, d in info["modalities"].items():
        lines.append(f"{m}: {d['dim']} features, extractor {d['extractor']} "
                     f"v{d['extractor_version']}, {d['rows']} rows ({d['mean_rows']:.1f}/sample), "
                     f"{d['missing']} samples without {m}, {100 * d['masked_share']:.1f}% rows "
                     "masked")
        lines += textwrap.wrap("features: " + " ".join(d["feature_names"]), 96,
                               initial_indent="  ", subsequent_indent="    ")
    fails = info["failures"]
    lines.append(f"failures: {len(fails)}")
    for f in fails:
        lines.append(f"  {f['id']} ({f['path']}) at {f['stage']}: {f['reason']}")
    return "\n".join(lines)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs where ``mask`` is True."""
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(d[::2].tolist(), d[1::2].tolist(), strict=True))


def _pick(names: list[str], *keys: str) -> int | None:
    low = [n.lower() for n in names]
    for k in keys:
        for i, n in enumerate(low):
            if k in n:
                return i
    return None


def plot_sample(path: str | os.PathLike, sample_id: str, out: str | os.PathLike) -> Path:
    """Draw one sample's timeline: AU heatmap, loudness and F0, and the words, on one time axis.

    Frames without a face are shaded grey; with no word timings the transcript is the title.

    Returns:
        The PNG path.

    Raises:
        StoreError: no such store or sample.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with StoreReader(path) as r:
        s = r.sample(sample_id)
        names = {m: r.feature_names(m) for m in r.modalities}
    out = Path(out)
    # A narrow right column holds the colorbar, so the three time axes stay aligned.
    fig, axes = plt.subplots(3, 2, figsize=(11, 7.5), sharex="col",
                             gridspec_kw={"height_ratios": [3, 1.6, 0.7], "width_ratios": [60, 1]})
    (ax_v, ax_cb), (ax_a, ax_x1), (ax_w, ax_x2) = axes
    ax_x1.axis("off")
    ax_x2.axis("off")
    end = max(s.duration, 1e-3)
    end = max(end, _plot_video(fig, ax_v, ax_cb, s, names.get("video")))
    ax_v.set_title(f"{s.id}   label {s.label or '-'}   split {s.split or '-'}", fontsize=11, loc="left")
    end = max(end, _plot_audio(ax_a, s, names.get("audio")))
    _plot_words(ax_w, s)
    ax_w.set_xlim(0, end)
    ax_w.set_xlabel("time (s)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _plot_video(fig: Any, ax_v: Any, ax_cb: Any, s: Sample, vn: list[str] | None) -> float:
    """The AU heatmap with faceless frames shaded; returns the last frame's end (0: none)."""
    video = s.modalities.get("video")
    if video is None or not len(video.data):
        ax_v.text(0.5, 0.5, "no video frames", ha="center", va="center", transform=ax_v.transAxes)
        ax_cb.axis("off")
        return 0.0
    cols = [i for i, n in enumerate(vn) if n.upper().startswith("AU")] or list(range(min(20, len(vn))))
    t0, t1 = video.times[0, 0], video.times[-1, 1]
    im = ax_v.imshow(video.data[:, cols].T, aspect="auto", interpolation="nearest",
                     origin="lower", extent=(t0, t1, -0.5, len(cols) - 0.5), cmap="viridis")
    ax_v.set_yticks(range(len(cols)), [vn[i] for i in cols], fontsize=7)
    for a, b in _runs(~video.mask):
        ax_v.axvspan(video.times[a, 0], video.times[b - 1, 1], color="0.6", alpha=0.85,
                     hatch="//", lw=0, label="no face" if a == _runs(~video.mask)[0][0] else None)
    if (~video.mask).any():
        ax_v.legend(loc="upper right", fontsize=8, framealpha=0.9)
    fig.colorbar(im, cax=ax_cb, label="intensity")
    ax_v.set_ylabel("action units")
    return t1


def _plot_audio(ax_a: Any, s: Sample, an: list[str] | None) -> float:
    """Loudness and voiced F0 (else the first features); returns the last frame's end (0: none)."""
    audio = s.modalities.get("audio")
    if audio is None or len(audio.data) <= 1:
        ax_a.text(0.5, 0.5, "no audio frames" if audio is None or not len(audio.data)
                  else "audio holds functionals only (no timeline)",
                  ha="center", va="center", transform=ax_a.transAxes)
        return 0.0
    mid = audio.times.mean(1)  # (T,) frame centres
    li = _pick(an, "loudness", "pcm_rmsenergy", "energy")
    fi = _pick(an, "f0semitone", "f0final", "f0")
    if li is not None:
        ax_a.plot(mid, audio.data[:, li], color="tab:blue", lw=1)
        ax_a.set_ylabel(an[li].split("_")[0], color="tab:blue", fontsize=8)
    if fi is not None:
        ax_f = ax_a.twinx()
        f0 = np.where(audio.data[:, fi] > 0, audio.data[:, fi], np.nan)  # 0 = unvoiced
        ax_f.plot(mid, f0, color="tab:red", lw=1.2)
        ax_f.set_ylabel(an[fi].split("_")[0][:18] + " (voiced)", color="tab:red", fontsize=8)
        if not np.isfinite(f0).any():
            ax_a.text(0.99, 0.95, "no voiced frames (F0 = 0)", ha="right", va="top",
                      color="tab:red", fontsize=8, transform=ax_a.transAxes)
    if li is None and fi is None:
        for j in range(min(3, audio.data.shape[1])):
            ax_a.plot(mid, audio.data[:, j], lw=1, label=an[j])
        ax_a.legend(fontsize=7)
    return float(audio.times[-1, 1])


def _plot_words(ax_w: Any, s: Sample) -> None:
    """The words as spans (paler = less sure ASR), or the transcript without word timings."""
    ax_w.set_yticks([])
    ax_w.set_ylim(0, 1)
    if not len(s.words):
        ax_w.text(0.01, 0.5, textwrap.shorten(f"text: {s.text}" if s.text else "(no transcript)",
                                              160), ha="left", va="center", fontsize=9,
                  transform=ax_w.transAxes)
        return
    probs = s.probs()
    for k, (w, (a, b)) in enumerate(zip(s.words, s.word_times, strict=True)):
        conf = float(probs[k]) if np.isfinite(probs[k]) else 1.0  # ASR: paler = less sure
        ax_w.axvspan(a, b, ymin=0.1, ymax=0.9, color="tab:green" if k % 2 else "tab:olive",
                     alpha=0.1 + 0.4 * conf, lw=0)
        ax_w.text((a + b) / 2, 0.5, w, ha="center", va="center", fontsize=8, clip_on=True)
    ax_w.set_ylabel(f"words\n({s.text_source or '?'})", fontsize=8)
    if s.text_source == "asr" and np.isfinite(s.asr_logprob):
        ax_w.set_title(f"ASR {s.asr_model} ({s.language}): avg log-prob {s.asr_logprob:.2f}, "
                       f"mean word prob {np.nanmean(probs):.2f}", fontsize=8, loc="right")


def to_json(info: dict[str, Any]) -> str:
    """``info`` as sorted, indented JSON."""
    return json.dumps(info, indent=2, sort_keys=True)
