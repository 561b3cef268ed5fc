"""`msekit extract`, `merge`, `inspect` and `doctor`: thin wrappers over msekit.extract & co.

The `extract` options are declared once, as the ``Annotated`` types below, in the order
`msekit extract --help` lists them.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from msekit.commands import user_errors
from msekit.extractors import names

_O = typer.Option


def _choices(name: str, values: list[str]) -> type:
    """An Enum of ``values`` for Typer to show and check as choices."""
    return Enum(name, {v: v for v in values}, type=str)


# Checked against the registry when the command runs (a plugin registered later still works).
AudioFeatures = _choices("AudioFeatures", ["eGeMAPSv02", "ComParE_2016"])
Engine = _choices("Engine", ["pool", "ray"])

Inputs = Annotated[list[Path], typer.Argument(help="Video files and/or folders (recursive).")]
Out = Annotated[Path, _O("--out", "-o", help="The HDF5 feature store to write.")]
Transcripts = Annotated[Path | None, _O(
    help="CSV id,text[,words] / id,word,start,end, or JSON {id: text}.")]
Labels = Annotated[Path | None, _O(help="CSV id,label[,split] or the MMSA/CH-SIMS label.csv.")]
Face = Annotated[str, _O(help="Face (video) backend: " + " | ".join(names("video")) + ".")]
FaceModel = Annotated[Path | None, _O(help="Model file of the face backend.")]
FaceOption = Annotated[list[str] | None, _O(
    "--face-option", metavar="KEY=VALUE", help="A field of the face backend's config (repeatable), "
    "e.g. csv_dir=feats/ for openface; an unknown KEY lists the allowed ones.")]
AsrOption = Annotated[list[str] | None, _O(
    "--asr-option", metavar="KEY=VALUE", help="A field of msekit.asr.AsrConfig (repeatable): "
    "beam_size=5, min_window=0 (full 30 s window), vad=false, align=false.")]
Fps = Annotated[float | None, _O(help="Video frames per second (default: native).")]
AudioSet = Annotated[AudioFeatures, _O(help="openSMILE feature set.")]
Functionals = Annotated[bool, _O(
    "--functionals", help="Utterance functionals (one row per file) instead of 10 ms descriptors.")]
Blendshapes = Annotated[bool, _O("--blendshapes", help="Append the raw blendshapes (mediapipe).")]
Llm = Annotated[str | None, _O(
    help="Tokenizer for token ids (default: the offline default LLM; 'none': no token ids).")]
Asr = Annotated[str, _O(
    help="Speech recognition: auto (samples without a given transcript) | always | none.")]
AsrModel = Annotated[str, _O(
    help="ASR model: base | tiny.en | a CTranslate2 folder | a hub id (online only).")]
Language = Annotated[str, _O(
    help="Spoken language (en, zh, ...) or auto (detection costs 50-85% more ASR time).")]
Workers = Annotated[int, _O(min=1, help="Worker processes (--engine ray: actors).")]
EngineOpt = Annotated[Engine, _O(help="pool: processes on this machine; ray: an actor pool on a "
                                 "Ray cluster (pip install 'msekit\\[ray]').")]
Address = Annotated[str | None, _O(
    help="--engine ray: the cluster, auto | HOST:PORT | ray://HOST:10001 (default: a local one).")]
RayOption = Annotated[list[str] | None, _O(
    "--ray-option", metavar="KEY=VALUE", help="--engine ray, repeatable: per actor num_cpus=1, "
    "num_gpus=0.5, memory, resources={...}, max_restarts; or retries, ready_timeout.")]
Shard = Annotated[str | None, _O(
    help="K/N: only entries i % N == K-1 of the sorted ids; join shards with `msekit merge`.")]
Strict = Annotated[bool, _O("--strict", help="Stop at the first failure.")]
Overwrite = Annotated[bool, _O("--overwrite", help="Replace a store made with other settings.")]
Align = Annotated[str | None, _O(
    help="Also write an aligned view when done: none | word | rate (see `msekit align`).")]
Rate = Annotated[float, _O(help="With --align rate: the common rate in Hz.")]
Quiet = Annotated[bool, _O("--quiet", "-q", help="No progress bar.")]
TrustRemoteCode = Annotated[bool, _O(
    "--trust-remote-code", help="Allow the --llm tokenizer repository's own code.")]


@user_errors
def extract_cmd(
    inputs: Inputs, out: Out, transcripts: Transcripts = None, labels: Labels = None,
    face: Face = "mediapipe", face_model: FaceModel = None, face_option: FaceOption = None,
    fps: Fps = None, audio_features: AudioSet = "eGeMAPSv02", functionals: Functionals = False,
    blendshapes: Blendshapes = False, llm: Llm = None, asr: Asr = "auto", asr_model: AsrModel = "base",
    language: Language = "auto", asr_option: AsrOption = None, workers: Workers = 1, engine: EngineOpt = "pool",
    address: Address = None, ray_option: RayOption = None, shard: Shard = None,
    strict: Strict = False, overwrite: Overwrite = False, align: Align = None, rate: Rate = 10.0,
    quiet: Quiet = False, trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Extract face, audio and text features of videos into one HDF5 store (resumable).

    Exit status 1 when any item failed (see `msekit inspect` for the failure list).
    """
    from rich.console import Console

    from msekit.asr import AsrConfig
    from msekit.engines import parse_options as parse_engine_options
    from msekit.extract import ExtractConfig, extract, summary_table
    from msekit.extractors import parse_options
    from msekit.extractors.base import parse_fields

    config = ExtractConfig(face=face, face_model=str(face_model) if face_model else None,
                           fps=fps, audio_features=audio_features.value, functionals=functionals,
                           blendshapes=blendshapes, llm=llm, asr=asr, asr_model=asr_model,
                           language=language,
                           asr_options=parse_fields(AsrConfig, asr_option or [], "--asr-option", "ASR",
                                                    exclude=("mode", "model", "language")),
                           video_options=parse_options("video", face, face_option or []) if face else {})
    summary = extract(inputs, out, config, transcripts=transcripts, labels=labels,
                      workers=workers, shard=shard, strict=strict, overwrite=overwrite,
                      progress=not quiet, trust_remote_code=trust_remote_code,
                      engine=engine.value, address=address,
                      engine_options=parse_engine_options(ray_option))
    Console().print(summary_table(summary))
    if align is not None and summary.done + summary.skipped:
        from msekit.views import align_store

        align_store(out, align, rate=rate)
        typer.echo(f"aligned view /views/{align} written into {out}")
    if not summary.ok:
        typer.secho(f"{summary.failed} item(s) failed"
                    + (" (stopped: --strict)" if summary.stopped else "")
                    + f"; their reasons are in the store: msekit inspect {out}",
                    err=True, fg=typer.colors.RED)
        raise typer.Exit(1)


@user_errors
def merge_cmd(
    stores: list[Path] = typer.Argument(..., help="Stores to join (e.g. the shards)."),
    out: Path = typer.Option(..., "--out", "-o", help="The merged store."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Join stores made with the same settings (refuses other settings and duplicate ids)."""
    from msekit.store import merge_stores

    n = merge_stores(stores, out, overwrite=overwrite)
    typer.echo(f"merged {n} samples from {len(stores)} stores into {out}")


@user_errors
def inspect_cmd(
    store: Path = typer.Argument(..., help="A feature store."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    sample: str | None = typer.Option(None, help="A sample id to show or plot."),
    plot: Path | None = typer.Option(None, help="With --sample: draw its timeline to a PNG."),
) -> None:
    """Summarize a store: samples, splits, labels, modalities, extractors, failures."""
    from msekit.inspect import format_summary, inspect_store, plot_sample, sample_summary

    if plot is not None and sample is None:
        raise typer.BadParameter("--plot needs --sample ID", param_hint="--plot")
    if sample is not None:
        info = sample_summary(store, sample)
        if plot is not None:
            plot_sample(store, sample, plot)
            info["plot"] = str(plot)
    else:
        info = inspect_store(store)
    typer.echo(json.dumps(info, indent=2, sort_keys=True) if as_json else format_summary(info))


def doctor_cmd(
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when a required piece is missing."),
) -> None:
    """Report which tools, backends and models are installed and usable, with fixes."""
    from rich.console import Console

    from msekit.doctor import doctor_table, run_checks

    checks = run_checks()
    Console().print(doctor_table(checks))
    if strict and any(c.required and not c.ok for c in checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the extraction commands to the CLI."""
    for name, fn in (("extract", extract_cmd), ("merge", merge_cmd), ("inspect", inspect_cmd),
                     ("doctor", doctor_cmd)):
        app.command(name)(fn)
