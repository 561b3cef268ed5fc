"""Benchmark: ASR quality, word times and cost; extraction speed with ASR on vs off.

Measures, on the bundled real media (data/librivox, data/ravdess):

1. WER of ``base`` and ``tiny.en`` on the 5 LibriVox clips against their transcripts
   (targets: base <= 2%, tiny.en <= 5%), with each model's default decoding (msekit's cut
   encoder window) and with Whisper's full 30 s window, and the word edits behind it
   (``errors_*``: ``ref>hyp``, ``-ref``, ``+hyp``); both sides normalised by ``msekit.wer``;
2. the median |start| and |end| difference of base's word times to pocketsphinx's forced
   alignment of the reference text (target <= 100 ms);
3. ASR CPU seconds per media second on a >= 30 s input (the LibriVox clips joined, twice),
   base (target <= 0.2) and tiny.en, language given, one thread;
4. short clips (the RAVDESS clips, 3-5 s): CPU per media second with the full 30 s window
   (Whisper's padding, "before"), with the cut window (msekit's default, "after") and, for
   comparison, packing several clips with 1 s gaps into one <= 28 s window, words split back
   by time (not used by msekit: a clip's text would depend on its neighbours);
5. extraction RTF (wall / media seconds) on the RAVDESS clips, default backends, native fps,
   2 workers, ``--asr none`` vs ASR on (no transcripts given, ``--language en``)
   (target: <= 1.3x), and the same ratio of CPU seconds (parent + workers), which a loaded
   machine does not distort.

``--options`` instead: the decoding-option table (model x option -> WER on the LibriVox clips,
WER on the RAVDESS clips as a check on other speech, CPU s per media second on each).

Usage::

    .venv/bin/python bench/bench_asr.py [--clips 60] [--skip-extract] [--json out.json]
    .venv/bin/python bench/bench_asr.py --options [--clips 60]

CPU times are process CPU (``time.process_time``) of this process with one CTranslate2
thread, so they hold on a loaded machine; the extraction RTF is wall time and does not.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msekit import asr, media  # noqa: E402
from msekit.wer import word_error_rate, word_errors  # noqa: E402
from msekit.wordalign import Aligner, match_words  # noqa: E402

SR = 16000


def rows(folder: str) -> list[dict[str, str]]:
    with open(ROOT / "data" / folder / "transcripts.csv", encoding="utf-8") as f:
        out = list(csv.DictReader(f))
    return [dict(r, path=str(ROOT / "data" / folder / f"{r['id']}.mp4")) for r in out]


def cpu_run(tr: asr.Transcriber, signals: list[np.ndarray]) -> tuple[list[asr.AsrResult], float]:
    """Results and CPU seconds per media second."""
    c0 = time.process_time()
    res = [tr.transcribe(s) for s in signals]
    return res, (time.process_time() - c0) / (sum(len(s) for s in signals) / SR)


def quality(lib: list[tuple[dict, np.ndarray]]) -> dict:
    refs, sigs = [r["text"] for r, _ in lib], [s for _, s in lib]
    out = {}
    for model in ("base", "tiny.en"):
        for name, low in (("default", None), ("full30", 0)):
            tr = asr.Transcriber(asr.AsrConfig(model=model, language="en", min_window=low))
            res, cps = cpu_run(tr, sigs)
            out[f"wer_{model}_{name}"] = word_error_rate(refs, [r.text for r in res])
            out[f"errors_{model}_{name}"] = edits(refs, [r.text for r in res])
            out[f"cpu_per_s_{model}_{name}_librivox"] = cps
            if model == "base" and name == "default":
                out.update(word_times(lib, res))
    return out


def edits(refs: list[str], hyps: list[str]) -> list[str]:
    """The word edits of each clip: ``ref>hyp`` (substitution), ``-ref``, ``+hyp``."""
    show = {"sub": "{1}>{2}", "del": "-{1}", "ins": "+{2}"}
    return [" ".join(show[op].format(op, r, h) for op, r, h in word_errors(ref, hyp))
            for ref, hyp in zip(refs, hyps, strict=True)]


# Decoding options of the table: name -> (AsrConfig fields, extra WhisperModel.transcribe
# arguments, compute type). "wN": min_window N s; "full30": Whisper's full window.
_FW_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
OPTIONS: dict[str, tuple[dict, dict, str]] = {
    "b1 w8": ({"beam_size": 1, "min_window": 8}, {}, "int8"),
    "b2 w8": ({"beam_size": 2, "min_window": 8}, {}, "int8"),
    "b3 w8": ({"beam_size": 3, "min_window": 8}, {}, "int8"),
    "b5 w8": ({"beam_size": 5, "min_window": 8}, {}, "int8"),
    "b2 w8 patience 2": ({"beam_size": 2, "min_window": 8}, {"patience": 2.0}, "int8"),
    "b1 w8 without_timestamps": ({"beam_size": 1, "min_window": 8},
                                 {"without_timestamps": True}, "int8"),
    "b1 w8 condition_on_previous_text": ({"beam_size": 1, "min_window": 8},
                                         {"condition_on_previous_text": True}, "int8"),
    "b1 w8 temperature fallback": ({"beam_size": 1, "min_window": 8},
                                   {"temperature": _FW_TEMPERATURES}, "int8"),
    "b1 w10": ({"beam_size": 1, "min_window": 10}, {}, "int8"),
    "b3 w10": ({"beam_size": 3, "min_window": 10}, {}, "int8"),
    "b5 w10": ({"beam_size": 5, "min_window": 10}, {}, "int8"),
    "b1 w12": ({"beam_size": 1, "min_window": 12}, {}, "int8"),
    "b5 w12": ({"beam_size": 5, "min_window": 12}, {}, "int8"),
    "b1 full30": ({"beam_size": 1, "min_window": 0}, {}, "int8"),
    "b5 full30": ({"beam_size": 5, "min_window": 0}, {}, "int8"),
    "b1 w8 float32": ({"beam_size": 1, "min_window": 8}, {}, "float32"),
    "b2 w8 float32": ({"beam_size": 2, "min_window": 8}, {}, "float32"),
}
_BASE_OPTIONS = ("b1 w8", "b2 w8", "b5 w8", "b1 w8 without_timestamps", "b1 w10", "b1 full30")


class _Extra:
    """A WhisperModel whose ``transcribe`` gets extra keyword arguments (the option table)."""

    def __init__(self, model, extra: dict) -> None:
        self.model, self.extra = model, extra

    def transcribe(self, *args, **kwargs):
        return self.model.transcribe(*args, **{**kwargs, **self.extra})


def option_table(lib, rav) -> dict:
    """Model x decoding option -> WER (LibriVox, RAVDESS) and CPU s per media second."""
    from faster_whisper import WhisperModel

    sets = {"librivox": lib, "ravdess": rav}
    out = {}
    for model in ("base", "tiny.en"):
        for name, (fields, extra, compute) in OPTIONS.items():
            if model == "base" and name not in _BASE_OPTIONS:
                continue
            tr = asr.Transcriber(asr.AsrConfig(model=model, language="en", **fields))
            if compute != "int8":
                tr.model = WhisperModel(tr.info.path, device="cpu", compute_type=compute,
                                        cpu_threads=1, local_files_only=True)
            tr.model = _Extra(tr.model, extra)
            tr.transcribe(lib[0][1])  # warm-up: lazy loads (VAD model) are not timed
            row = {}
            for set_name, items in sets.items():
                refs, sigs = [r["text"] for r, _ in items], [s for _, s in items]
                res, cps = cpu_run(tr, sigs)
                row[f"wer_{set_name}"] = word_error_rate(refs, [r.text for r in res])
                row[f"cpu_per_s_{set_name}"] = cps
                if set_name == "librivox":
                    row["errors_librivox"] = [e for e in edits(refs, [r.text for r in res]) if e]
            out[f"{model} | {name}"] = row
            print(f"| {model} | {name} | {100 * row['wer_librivox']:.1f}% | "
                  f"{row['cpu_per_s_librivox']:.3f} | {100 * row['wer_ravdess']:.1f}% | "
                  f"{row['cpu_per_s_ravdess']:.3f} | {'; '.join(row['errors_librivox'])} |",
                  flush=True)
    return {"options": out}


def word_times(lib, res) -> dict:
    al, ds, de = Aligner(), [], []
    for (r, sig), h in zip(lib, res, strict=True):
        words, ref = al.align(sig, r["text"])
        _, hyp = match_words(r["text"], h.words, h.times)
        if len(words) and len(hyp) == len(ref):
            ds += list(np.abs(hyp[:, 0] - ref[:, 0]))
            de += list(np.abs(hyp[:, 1] - ref[:, 1]))
    return {"word_start_median_ms": 1000 * float(np.median(ds)),
            "word_end_median_ms": 1000 * float(np.median(de)), "words_compared": len(ds)}


def long_input(lib) -> dict:
    gap = np.zeros(SR // 2, np.float32)
    sig = np.concatenate([x for _ in range(2) for _, s in lib for x in (s, gap)])  # (S,)
    out = {"long_input_s": len(sig) / SR}
    for model in ("base", "tiny.en"):
        tr = asr.Transcriber(asr.AsrConfig(model=model, language="en"))
        _, out[f"cpu_per_s_{model}_long"] = cpu_run(tr, [sig])
    return out


def packed(tr: asr.Transcriber, sigs: list[np.ndarray], limit: float = 28.0):
    """Transcribe clips packed into <= ``limit`` s windows with 1 s gaps; split by time.

    Returns:
        One text per clip: the words whose middle falls in the clip's span (+-0.5 s).
    """
    gap = np.zeros(SR, np.float32)
    texts, i = [], 0
    while i < len(sigs):
        group, t = [], 0.0
        while i < len(sigs) and t + len(sigs[i]) / SR <= limit:
            group.append((t, sigs[i]))
            t += len(sigs[i]) / SR + 1.0
            i += 1
        sig = np.concatenate([x for _, s in group for x in (s, gap)])
        # Repeated sentences (RAVDESS has two) trip Whisper's compression-ratio check and its
        # temperature fallback (5 more decodes); off here, to give packing its best case.
        segs, info = tr.model.transcribe(sig, language="en", beam_size=1, word_timestamps=True,
                                         vad_filter=True, condition_on_previous_text=False,
                                         compression_ratio_threshold=None)
        res = asr._result(list(segs), info.language)
        mids = res.times.mean(1) if len(res.words) else np.zeros(0)
        for start, s in group:
            inside = (mids >= start - 0.5) & (mids < start + len(s) / SR + 0.5)
            texts.append(" ".join(w for w, k in zip(res.words, inside, strict=True) if k))
    return texts


def short_clips(rav, n: int) -> dict:
    rav = rav[:n]
    sigs = [media.load_audio(r["path"], SR) for r in rav]
    refs = [r["text"] for r in rav]
    secs = sum(len(s) for s in sigs) / SR
    out = {"short_clips": len(sigs), "short_media_s": secs}
    for name, low in (("full30", 0), ("cut", 8)):
        tr = asr.Transcriber(asr.AsrConfig(model="base", language="en", min_window=low))
        res, cps = cpu_run(tr, sigs)
        out[f"cpu_per_s_short_{name}"] = cps
        out[f"wer_short_{name}"] = word_error_rate(refs, [r.text for r in res])
    tr = asr.Transcriber(asr.AsrConfig(model="base", language="en", min_window=0))
    c0 = time.process_time()
    texts = packed(tr, sigs)
    out["cpu_per_s_short_packed"] = (time.process_time() - c0) / secs
    out["wer_short_packed"] = word_error_rate(refs, texts)
    return out


def extraction(rav, n: int, workdir: Path) -> dict:
    from msekit.extract import ExtractConfig, extract

    clips = workdir / "clips"
    clips.mkdir(exist_ok=True)
    for r in rav[:n]:
        dst = clips / Path(r["path"]).name
        if not dst.exists():
            os.symlink(r["path"], dst)
    out = {}
    for name, mode in (("off", "none"), ("on", "auto")):
        cfg = ExtractConfig(asr=mode, language="en")
        c0 = _cpu()
        s = extract([clips], workdir / f"{name}.h5", cfg, workers=2, progress=False,
                    overwrite=True)
        out[f"extract_rtf_asr_{name}"] = s.wall_seconds / s.media_seconds
        out[f"extract_cpu_per_s_asr_{name}"] = (_cpu() - c0) / s.media_seconds
        (workdir / f"{name}.h5").unlink()
    for k in ("rtf", "cpu_per_s"):
        out[f"extract_{k}_ratio"] = out[f"extract_{k}_asr_on"] / out[f"extract_{k}_asr_off"]
    return out


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the pool workers, ffmpeg)."""
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=60, help="RAVDESS clips for parts 4 and 5")
    ap.add_argument("--skip-extract", action="store_true")
    ap.add_argument("--only-extract", action="store_true")
    ap.add_argument("--only-short", action="store_true", help="part 4 only")
    ap.add_argument("--options", action="store_true", help="the decoding-option table only")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    lib = [(r, media.load_audio(r["path"], SR)) for r in rows("librivox")]
    rav = rows("ravdess")
    fig: dict = {}
    parts = () if args.only_extract else (lambda: quality(lib), lambda: long_input(lib),
                                          lambda: short_clips(rav, args.clips))
    if args.options:
        rav_sig = [(r, media.load_audio(r["path"], SR)) for r in rav[:args.clips]]
        print("| model | option | WER LibriVox | CPU s/s | WER RAVDESS | CPU s/s | LibriVox edits |"
              "\n|---|---|---|---|---|---|---|")
        parts, args.skip_extract = (lambda: option_table(lib, rav_sig),), True
    if args.only_short:
        parts, args.skip_extract = (lambda: short_clips(rav, args.clips),), True
    for part in parts:
        fig.update(part())
        print(json.dumps(fig, indent=1), flush=True)
    if not args.skip_extract:
        with tempfile.TemporaryDirectory(prefix="msekit-bench-asr-") as tmp:
            fig.update(extraction(rav, args.clips, Path(tmp)))
    print(json.dumps(fig, indent=1))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
