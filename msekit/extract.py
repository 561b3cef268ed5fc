"""Extraction: raw videos -> one HDF5 feature store, offline, streaming, resumable.

``extract(inputs, out, config)`` discovers the media (see ``msekit.inputs`` for ids,
transcripts and labels), runs the face extractor on the frames and the audio extractor on the
16 kHz mono signal of every file, tokenizes the transcripts with the LLM's tokenizer and appends
one ``Sample`` per file to the store.

Order and determinism
    Items are processed and committed in sorted (id, path) order. With several workers, results
    that finish early wait in a small buffer (``4 * workers`` items) until every item before them
    is committed, so a run with 1 or N workers, a resumed run and a merge of shards
    (``msekit.store.merge_stores`` writes sorted by id) hold identical arrays per id, and an
    uninterrupted run has the same sample order as the merge of its shards.

Failures
    A file that cannot be read (corrupt, truncated, empty, unsupported) is a per-item failure
    ``(id, path, stage, reason)`` recorded in the store's /failures and printed; the run goes on
    (``strict=True`` stops at the first one). A file without an audio stream is kept with audio
    length 0; frames without a face are kept with mask 0; both are warnings, not failures.

Resume and crash safety
    The store's settings (``ExtractConfig`` + the backends' configs and versions) are hashed;
    rerunning with the same settings skips every committed sample, other settings are refused
    unless ``overwrite``. Each finished sample is committed at once (store.py's commit protocol:
    rows first, then ``n_samples``), so a kill -9 loses at most the samples in flight.

Shards
    ``shard=(K, N)`` keeps entry i of the sorted (id, path) list when ``i % N == K - 1``
    (round-robin, so long and short clips spread evenly); ``msekit merge`` joins the shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from msekit import textstage
from msekit.asr import prepare as asr_prepare
from msekit.asr import settings as asr_settings
from msekit.engines import open_engine
from msekit.errors import MediaError, MsekitError
from msekit.inputs import Item, Plan, in_shard, parse_shard, plan_inputs
from msekit.store import Modality, Sample, StoreWriter
from msekit.tables import escape_name, is_escaped
from msekit.tokenfp import fingerprint

SAMPLE_RATE = 16000

@dataclass
class ExtractConfig:
    """How to extract; saved (with the backends' resolved configs) as the store's settings.

    Attributes:
        face: video backend, one of ``msekit.extractors.names("video")`` ('' = no video).
        face_model: model file for the face backend (None: the backend's default).
        fps: video frame rate to sample at (None: the native rate).
        audio: audio backend, one of ``names("audio")`` ('' = no audio).
        audio_features: acoustic feature set (eGeMAPSv02 or ComParE_2016 for opensmile).
        functionals: also compute per-file functionals (backend-defined rows).
        blendshapes: append the raw blendshapes after the AU columns (mediapipe).
        llm: tokenizer used for the transcripts' token ids (None: msekit.llm.DEFAULT_LLM;
            'none': store no token ids).
        video_options: extra fields of the video backend's config dataclass.
        audio_options: extra fields of the audio backend's config dataclass.
        asr: speech recognition: auto (samples without a given transcript) | always | none;
            see ``msekit.textstage``.
        asr_model: ``base`` | ``tiny.en`` | a CTranslate2 folder | a hub id (online only).
        language: spoken language (``en``, ``zh``, ...) or ``auto``.
        asr_options: extra ``msekit.asr.AsrConfig`` fields (beam_size, vad, min_window, align).
    """

    face: str = "mediapipe"
    face_model: str | None = None
    fps: float | None = None
    audio: str = "opensmile"
    audio_features: str = "eGeMAPSv02"
    functionals: bool = False
    blendshapes: bool = False
    llm: str | None = None
    video_options: dict[str, Any] = field(default_factory=dict)
    audio_options: dict[str, Any] = field(default_factory=dict)
    asr: str = "auto"
    asr_model: str = "base"
    language: str = "auto"
    asr_options: dict[str, Any] = field(default_factory=dict)

    def asr_config(self):
        """The ``msekit.asr.AsrConfig`` of this config."""
        from msekit.asr import AsrConfig

        try:
            return AsrConfig(mode=self.asr, model=self.asr_model, language=self.language,
                             **self.asr_options)
        except TypeError as e:
            raise MsekitError(f"bad asr_options {self.asr_options}: {e}") from None

    def __post_init__(self) -> None:
        self.language = self.asr_config().language  # checked; 'EN' and 'en' hash alike
        if self.fps is not None:
            if not float(self.fps) > 0:
                raise MsekitError(f"fps must be > 0 (or None for the native rate), got {self.fps}")
            self.fps = float(self.fps)  # 10 and 10.0 must hash alike
        if self.face_model is not None:
            self.face_model = str(self.face_model)
        if not self.face and not self.audio:
            raise MsekitError("nothing to extract: face and audio backends are both empty")

    def backend_configs(self) -> dict[str, Any]:
        """The video / audio backends' config dataclasses built from this config.

        A shared field (fps, face_model, ...) reaches the backend config field that the backend
        declares in its ``options``; ``video_options`` / ``audio_options`` set any other field.

        Raises:
            MsekitError: an unknown option, a shared flag set for a backend that does not take
                it, or a value the backend's config refuses.
        """
        from msekit.extractors import base

        out = {}
        for kind, name, extra in (("video", self.face, self.video_options),
                                  ("audio", self.audio, self.audio_options)):
            if not name:
                continue
            cls, cfg_cls = base.backend_class(kind, name), base.config_class(kind, name)
            known = sorted(f.name for f in fields(cfg_cls))
            kwargs = dict(extra)
            bad = sorted(set(kwargs) - set(known))
            if bad:
                raise MsekitError(f"{kind} backend {name!r} has no option(s) {bad}; allowed: "
                                  f"{', '.join(known)}")
            for ours in base.SHARED_OPTIONS[kind]:
                value, target = getattr(self, ours), cls.options.get(ours)
                if target is not None:
                    field_name, convert = target if isinstance(target, tuple) else (target, None)
                    kwargs.setdefault(field_name, convert(value) if convert else value)
                elif value != getattr(ExtractConfig, ours, None):
                    raise MsekitError(f"{kind} backend {name!r} does not support "
                                      f"--{ours.replace('_', '-')} (its options: {', '.join(known)})")
            try:
                out[kind] = cfg_cls(**kwargs)
            except (TypeError, ValueError) as e:
                raise MsekitError(f"{kind} backend {name!r}: bad options {kwargs}: {e}") from None
        return out


@dataclass
class ExtractSummary:
    """What an extraction run did.

    Attributes:
        out: the store.
        total: items in this run (after sharding), refused inputs included.
        done: samples extracted and committed now.
        skipped: samples already in the store (resume).
        updated: field -> skipped samples whose label / split / group / text the tables changed.
        failed: per-item failures of this run.
        failures: their records (id, path, stage, reason).
        warnings: run-level and per-item warnings.
        orphan_ids: ids in the transcripts/labels without a video.
        no_transcript: videos without a transcript (text '').
        no_audio: samples kept with audio length 0.
        no_face: samples without a face in any frame.
        media_seconds: duration of the media extracted now.
        wall_seconds: run time.
        stopped: True when ``strict`` stopped the run at a failure.
        workers: worker processes used (1 = in-process).
    """

    out: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    orphan_ids: int = 0
    no_transcript: int = 0
    no_audio: int = 0
    no_face: int = 0
    media_seconds: float = 0.0
    wall_seconds: float = 0.0
    stopped: bool = False
    workers: int = 1
    updated: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def speed(self) -> float:
        """Media seconds extracted per wall second (x realtime); the RTF is its inverse."""
        return self.media_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Per-item work (runs in the engine's workers, see msekit.engines, or in-process)

def _build_extractors(config: ExtractConfig) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------
# The run (parent process: the single writer)


def settings_of(config: ExtractConfig, extractors: dict[str, Any] | None = None) -> dict[str, Any]:
    """The store settings of a config: JSON-native, so their hash survives a round trip.

    A loaded backend's ``settings()`` replaces its raw config, so that e.g. only the face model's
    file name, not its absolute path, guards resumes.
    """
    from msekit.extractors import base

    cfg = asdict(config)
    cfg["llm"] = _llm_name(config)
    if config.face_model:
        cfg["face_model"] = Path(config.face_model).name
    settings: dict[str, Any] = {"extract": cfg, "sample_rate": SAMPLE_RATE,
                                "text": asr_settings(config.asr_config())}
    for kind, bcfg in config.backend_configs().items():
        name = config.face if kind == "video" else config.audio
        x = (extractors or {}).get(kind)
        cls = base._REGISTRY[kind][name][0]  # the version is a class attribute
        backend = x.settings() if x is not None else asdict(bcfg)
        settings[kind] = {"backend": name, "version": str(getattr(cls, "version", "")),
                          "config": backend}
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def _llm_name(config: ExtractConfig) -> str:
    if config.llm:
        return config.llm
    from msekit.llm import DEFAULT_LLM

    return DEFAULT_LLM


_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(config: ExtractConfig, trust_remote_code: bool = False):
    """The transcripts' text encoder (None for llm='none'); loaded once per process."""
    name = _llm_name(config)
    if name.lower() == "none":
        return None
    if name not in _TOKENIZERS:
        from msekit.llm import load_text_encoder

        _TOKENIZERS[name] = load_text_encoder(name, trust_remote_code=trust_remote_code)
    return _TOKENIZERS[name]


def _plugin_modules(config: ExtractConfig) -> list[str]:
    from msekit.extractors import base

    mods = []
    for kind, name in (("video", config.face), ("audio", config.audio)):
        if name:
            base.config_class(kind, name)  # an unknown name: the registry's one-line error
            m = base._REGISTRY[kind][name][0].__module__
            if not m.startswith("msekit.extractors"):
                mods.append(m)
    return mods


class _Reporter:
    """Progress bar (rich, on stderr) and per-item messages; silent when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.progress = None
        if enabled and total:
            from msekit.progress import start_bar

            self.progress = start_bar("extract", total, eta=True,
                                      fields={"speed": "{task.fields[speed]}"})
            self.task = self.progress.task_ids[0]

    def say(self, msg: str, style: str = "") -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.console.print(msg, style=style, markup=False, highlight=False)
        else:
            from rich.console import Console

            Console(stderr=True).print(msg, style=style, markup=False, highlight=False)

    def advance(self, speed: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, speed=f"{speed:.1f}x realtime")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def extract(
    inputs: list[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    config: ExtractConfig | None = None,
    *,
    transcripts: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    workers: int = 1,
    shard: str | tuple[int, int] | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    trust_remote_code: bool = False,
    engine: str = "pool",
    address: str | None = None,
    engine_options: dict[str, Any] | None = None,
) -> ExtractSummary:
    """Extract features of every video under ``inputs`` into the store ``out``.

    Args:
        inputs: video files and/or folders (searched recursively).
        out: the .h5 store (created, or resumed when it holds the same settings).
        config: backends and their options (default ``ExtractConfig()``).
        transcripts: transcripts file (see ``msekit.inputs``).
        labels: labels file (id,label[,split] or the MMSA / CH-SIMS label.csv).
        workers: processes; 1 runs in this process, N > 1 a spawn pool (each worker loads its
            extractors once and uses one thread); with engine 'ray', the actors.
        shard: "K/N" or (K, N): extract only entries i of the sorted list with i % N == K-1.
        strict: stop at the first failure.
        overwrite: replace a store made with other settings.
        progress: show a progress bar and per-item messages on stderr.
        trust_remote_code: allow the tokenizer repository's own code (a permission, not a
            setting: it does not change the store's settings hash).
        engine: 'pool' (this machine) or 'ray' (a Ray cluster; see ``msekit.engines``).
        address: with 'ray': the cluster (None: a local one; 'auto'; 'HOST:PORT').
        engine_options: with 'ray': actor resources (``num_cpus``, ``num_gpus``, ...) and
            ``retries``, ``ready_timeout`` (see ``msekit.engines.ray``).

    Returns:
        ExtractSummary (``.ok`` is False when any item failed).

    Raises:
        MsekitError: bad arguments, unknown backend, unreadable tables, or a store made with
            other settings (without ``overwrite``).
    """
    t0 = time.perf_counter()
    config = config or ExtractConfig()
    if workers < 1:
        raise MsekitError(f"workers must be >= 1, got {workers}")
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    if not inputs:
        raise MsekitError("no inputs: give video files or folders to extract")
    shard_kn = parse_shard(shard)
    out = Path(out)
    plan: Plan = plan_inputs(list(inputs), transcripts, labels, transcribe=config.asr != "none")
    entries = sorted([(it.id, str(it.path), it) for it in plan.items]
                     + [(p.id, p.path, p) for p in plan.problems], key=lambda e: (e[0], e[1]))
    entries = [e for i, e in enumerate(entries) if in_shard(i, shard_kn)]
    summary = ExtractSummary(out=str(out), total=len(entries), warnings=list(plan.warnings),
                             orphan_ids=len(plan.orphan_ids), workers=workers)
    in_run = {e[0] for e in entries}
    summary.no_transcript = sum(1 for it in plan.items if it.id in in_run and not it.has_transcript)
    text_cfg = config.asr_config()
    need_asr = any(_text_job(it, text_cfg).wants_asr for _, _, it in entries if isinstance(it, Item))
    if need_asr:
        asr_prepare(text_cfg)  # a missing model or an impossible language fails before any work

    # With workers, the models load there while this process reads the tokenizer; the driver
    # only needs the backends' names and settings, which one worker reports.
    runner = open_engine(engine, config, _plugin_modules(config), min(workers, len(entries)),
                         address=address, options=engine_options, asr=need_asr)
    try:
        tokenizer = _tokenizer(config, trust_remote_code)  # before the store exists: a bad --llm leaves no store
        extractors = runner.backends()
        settings = settings_of(config, extractors)
        if tokenizer is not None:  # training reads the stored ids when its tokenizer is this one
            settings["tokenizer"] = {"name": _llm_name(config), "fingerprint": fingerprint(tokenizer.encode)}
        feature_names = {m: list(x.feature_names) for m, x in extractors.items()}
        modality_attrs = {m: {"extractor": x.name, "extractor_version": str(x.version),
                              "config": settings[m]["config"]} for m, x in extractors.items()}
        rep = _Reporter(progress, 0)
        for w in plan.warnings:
            rep.say(f"warning: {w}", "yellow")

        with StoreWriter(out, settings, feature_names, modality_attrs, overwrite=overwrite) as writer:
            _write_config(out, settings, writer.committed())
            existing = writer.existing_ids()
            todo: list[Item] = []
            kept: list[Item] = []
            for sid, path, obj in entries:
                if isinstance(obj, Item):
                    if sid in existing:
                        summary.skipped += 1
                        kept.append(obj)
                    else:
                        todo.append(obj)
                else:
                    _fail(writer, summary, rep, sid, path, "input", obj.reason)
            writer.commit()
            if summary.failed and strict:
                summary.stopped = True
                todo = []
            rep = _Reporter(progress, len(todo))
            try:
                _run(todo, runner, writer, tokenizer, summary, rep, strict, t0, text_cfg)
            finally:
                rep.close()
                writer.commit()
        _update_kept(out, kept, plan, tokenizer, summary, rep)
    finally:
        runner.close()
    summary.wall_seconds = time.perf_counter() - t0
    return summary


def _update_kept(out: Path, kept: list[Item], plan: Plan, tokenizer: Any, summary: ExtractSummary,
                 rep: _Reporter) -> None:
    """Give skipped samples what the tables now say: a corrected table is never ignored."""
    if not kept or not plan.defined:
        return
    from msekit.relabel import apply_changes

    wanted = {it.id: {k: getattr(it, k) for k in plan.defined} for it in kept}
    summary.updated = apply_changes(out, wanted, tokenizer)
    if summary.updated:
        what = ", ".join(f"{k} {v}" for k, v in sorted(summary.updated.items()))
        rep.say(f"updated samples already in the store from the tables: {what}")


def _write_config(out: Path, settings: dict[str, Any], committed: int) -> None:
    """Write ``<store>.config.json`` beside the store (temp file + rename: never half-written)."""
    from msekit.store import write_error

    target = out.with_name(out.name + ".config.json")
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):  # a read-only folder holds no temp file
            tmp.unlink(missing_ok=True)
        raise write_error(target, e, committed) from None


def _fail(writer: StoreWriter, summary: ExtractSummary, rep: _Reporter, sid: str, path: str,
          stage: str, reason: str) -> None:
    writer.add_failure(sid, path, stage, reason)
    summary.failed += 1
    summary.failures.append({"id": sid, "path": path, "stage": stage, "reason": reason})
    rep.say(f"failed: {sid} ({path}) at {stage}: {reason}", "red")


def _run(todo: list[Item], runner: Any, writer: StoreWriter, tokenizer: Any,
         summary: ExtractSummary, rep: _Reporter, strict: bool, t0: float,
         text_cfg: Any = None) -> None:
    """Process ``todo`` in order on the engine ``runner``, committing each result as soon as
    all before it are in."""
    if not todo:
        return
    results = runner.results([(it.id, str(it.path), _text_job(it, text_cfg)) for it in todo])
    try:
        for item, res in zip(todo, results, strict=False):
            if res["ok"]:
                writer.add(_sample(item, res, tokenizer))
                writer.commit()  # promptly: a crash loses only the samples in flight
                summary.done += 1
                summary.media_seconds += res["duration"]
                summary.no_audio += bool(res.get("no_audio"))
                summary.no_face += bool(res.get("no_face"))
                for w in map(escape_name, res["warnings"]):
                    summary.warnings.append(w)
                    rep.say(f"warning: {w}", "yellow")
            else:
                _fail(writer, summary, rep, item.id, escape_name(res["path"]), res["stage"],
                      escape_name(res["reason"]))
                writer.commit()
                if strict:
                    summary.stopped = True
                    rep.say("stopping at the first failure (--strict)", "red")
                    break
            rep.advance(summary.media_seconds / max(time.perf_counter() - t0, 1e-9))
    finally:
        results.close()


def _text_job(item: Item, text_cfg: Any) -> textstage.TextJob | None:
    if text_cfg is None:
        return None
    return textstage.TextJob(text_cfg, item.text, item.has_transcript, bool(item.words))


def _sample(item: Item, res: dict[str, Any], tokenizer: Any) -> Sample:
    text = textstage.sample_fields(item.text, item.has_transcript, res.get("text") or {})
    ids = (np.asarray(tokenizer.encode(text["text"]), np.int32)
           if tokenizer is not None and text["text"] else np.zeros(0, np.int32))
    text.setdefault("words", list(item.words))
    text["word_times"] = np.asarray(text.get("word_times", item.word_times),
                                    np.float64).reshape(-1, 2)  # (W, 2)
    raw = str(item.path)
    return Sample(
        id=item.id, label=item.label, split=item.split, group=item.group,
        source=escape_name(raw), source_hex=os.fsencode(raw).hex() if is_escaped(raw) else "",
        duration=res["duration"], token_ids=ids,  # (K,)
        modalities=res["modalities"], **text,
    )


def summary_table(summary: ExtractSummary):
    """A rich Table of the run's counts, media hours and speed."""
    from rich.table import Table

    t = Table(title=f"msekit extract -> {summary.out}", show_header=True)
    for col in ("done", "skipped", "failed", "warnings", "media h", "wall s", "speed"):
        t.add_column(col, justify="right")
    t.add_row(str(summary.done), str(summary.skipped), str(summary.failed),
              str(len(summary.warnings)), f"{summary.media_seconds / 3600:.3f}",
              f"{summary.wall_seconds:.1f}", f"{summary.speed:.2f}x realtime")
    if summary.updated:
        t.caption = "skipped samples updated from the tables: " + ", ".join(
            f"{k} {v}" for k, v in sorted(summary.updated.items()))
    return t


from msekit import callable_module  # noqa: E402

callable_module(__name__)  # msekit.extract(...) calls extract(...)
