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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from msekit import textstage
from msekit.asr import prepare as asr_prepare
from msekit.asr import settings as asr_settings
from msekit.engines import open_engine
from msekit.errors import MsekitError
from msekit.extract_item import (  # noqa: F401 - re-exported: the engines' per-item work
    SAMPLE_RATE,
    _build_extractors,
    process_file,
)
from msekit.extract_report import ExtractSummary, _Reporter, summary_table  # noqa: F401 - re-exported
from msekit.inputs import Item, Plan, in_shard, parse_shard, plan_inputs
from msekit.store import Sample, StoreWriter
from msekit.tables import escape_name, is_escaped
from msekit.tokenfp import fingerprint


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
        full = self.asr_config()
        self.language = full.language  # checked; 'EN' and 'en' hash alike
        if self.asr_options:  # an option equal to the model's default hashes as if not given
            from msekit.asr import AsrConfig

            plain = AsrConfig(mode=self.asr, model=self.asr_model, language=self.language)
            self.asr_options = {k: getattr(full, k) for k in sorted(self.asr_options)
                                if getattr(full, k) != getattr(plain, k)}
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
    out = Path(out)
    run = _plan_run(inputs, out, config, transcripts, labels, workers, shard)
    # With workers, the models load there while this process reads the tokenizer; the driver
    # only needs the backends' names and settings, which one worker reports.
    runner = open_engine(engine, config, _plugin_modules(config), min(workers, len(run.entries)),
                         address=address, options=engine_options, asr=run.need_asr)
    try:
        tokenizer = _tokenizer(config, trust_remote_code)  # before the store exists: a bad --llm leaves no store
        settings, feature_names, modality_attrs = _store_layout(config, runner.backends(), tokenizer)
        rep = _Reporter(progress, 0)
        for w in run.plan.warnings:
            rep.say(f"warning: {w}", "yellow")

        with StoreWriter(out, settings, feature_names, modality_attrs, overwrite=overwrite) as writer:
            _write_config(out, settings, writer.committed())
            todo, kept = _split_committed(run, writer, rep, strict)
            rep = _Reporter(progress, len(todo))
            try:
                _run(todo, runner, writer, tokenizer, run.summary, rep, strict, t0, run.text_cfg)
            finally:
                rep.close()
                writer.commit()
        _update_kept(out, kept, run.plan, tokenizer, run.summary, rep)
    finally:
        runner.close()
    run.summary.wall_seconds = time.perf_counter() - t0
    return run.summary


class _PlannedRun(NamedTuple):
    """The entries of a run (items and refused inputs, sorted, sharded) and its text stage."""

    plan: Plan
    entries: list[tuple[str, str, Any]]  # (id, path, Item | refused input)
    summary: ExtractSummary
    text_cfg: Any
    need_asr: bool


def _plan_run(inputs: list[str | os.PathLike] | str | os.PathLike, out: Path,
              config: ExtractConfig, transcripts: str | os.PathLike | None,
              labels: str | os.PathLike | None, workers: int,
              shard: str | tuple[int, int] | None) -> _PlannedRun:
    """Check the arguments, read the inputs and tables, keep this shard's entries.

    Raises:
        MsekitError: bad arguments, unreadable tables, or a missing ASR model.
    """
    if workers < 1:
        raise MsekitError(f"workers must be >= 1, got {workers}")
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    if not inputs:
        raise MsekitError("no inputs: give video files or folders to extract")
    shard_kn = parse_shard(shard)
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
    return _PlannedRun(plan, entries, summary, text_cfg, need_asr)


def _store_layout(config: ExtractConfig, extractors: dict[str, Any], tokenizer: Any = None
                  ) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, dict[str, Any]]]:
    """(settings, feature names, modality attributes) of the store for the loaded backends."""
    settings = settings_of(config, extractors)
    if tokenizer is not None:  # training reads the stored ids when its tokenizer is this one
        settings["tokenizer"] = {"name": _llm_name(config), "fingerprint": fingerprint(tokenizer.encode)}
    feature_names = {m: list(x.feature_names) for m, x in extractors.items()}
    modality_attrs = {m: {"extractor": x.name, "extractor_version": str(x.version),
                          "config": settings[m]["config"]} for m, x in extractors.items()}
    return settings, feature_names, modality_attrs


def _split_committed(run: _PlannedRun, writer: StoreWriter, rep: _Reporter,
                     strict: bool) -> tuple[list[Item], list[Item]]:
    """(to extract, already committed) items; refused inputs are recorded as failures.

    With ``strict``, a refused input stops the run before any extraction (nothing to do).
    """
    summary, existing = run.summary, writer.existing_ids()
    todo: list[Item] = []
    kept: list[Item] = []
    for sid, path, obj in run.entries:
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
    return todo, kept


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


from msekit import callable_module  # noqa: E402

callable_module(__name__)  # msekit.extract(...) calls extract(...)
