"""``TrainConfig``: every setting of ``msekit train`` in one dataclass, with presets.

The adapter's own hyper-parameters are a nested :class:`~msekit.adapter.AdapterConfig`
(``config.adapter``), not re-declared here. The ``msekit train`` options are generated from
these fields' metadata (``help``, and ``flag`` where the option's name differs), so the
command line and the Python API cannot drift apart.

Precedence: dataclass defaults < ``pipelines/presets.json`` defaults < the preset < explicit
values (:func:`resolve_config`).

Examples:
    >>> cfg = resolve_config("mosei-llama2-7b", lr=1e-3, audio_hidden=16)
    >>> cfg.batch_size, cfg.lr, cfg.adapter.audio_hidden, cfg.adapter.video_hidden
    (8, 0.001, 16, 32)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from msekit.adapter.config import AdapterConfig
from msekit.errors import MsekitError
from msekit.llm import DEFAULT_LLM
from msekit.prompts import pipelines_file

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PAPER_SEEDS = (1111, 2222, 3333, 4444, 5555)  # the MSE-Adapter paper's five seeds
# AdapterConfig fields that come from the LLM and the store, never from the user.
ADAPTER_DERIVED = ("llm_hidden_size", "audio_dim", "video_dim", "path_outputs")
# Fields that may change between a run and its resumption without changing the result.
RESUME_FREE = {"resume", "overwrite", "stop_after", "progress", "num_workers", "device", "log_every",
               "report", "store", "out", "world_size", "seeds"}


KEEP_MODES = ("best", "last")  # which epoch's adapter a run keeps


def _f(default: Any = None, help: str = "", **meta: Any) -> Any:  # noqa: A002
    if callable(default):
        return field(default_factory=default, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    """Everything ``msekit train`` needs; saved as ``train_config.json`` in the run folder."""

    store: str = _f("", "The feature store (.h5).", cli=False)
    out: str = _f("", "The run folder (default: runs/<store stem>-<llm>).", cli=False)
    preset: str | None = _f(None, "A preset of pipelines/presets.json, e.g. mosei-llama2-7b.")
    llm: str = _f(DEFAULT_LLM, "LLM alias, Hugging Face id or folder.")
    trust_remote_code: bool = _f(False, "Allow the LLM repository's code.")
    # task, labels, prompt
    task: str | None = _f(None, "regression | classification (default: from the store's labels).")
    label_names: list[str] | None = _f(None, "Comma-separated classes to train on, in index order (default: "
                                       "all of the store's); samples of other classes are left out.",
                                       flag="--labels")
    prompt: str | None = _f(None, "Prompt preset (mosei, meld, ...) or template (default: the task's).")
    language: str = _f("en", "Prompt language of a template (en | zh).")
    label_format: str | None = _f(None, "decimal1 | signed_decimal1 | index | name (default: the prompt's).")
    prompt_text: str | None = _f(None, "Replaces the prompt's instruction text (markers and labels stay).")
    value_range: list[float] | None = _f(None, "Regression range low,high (default: the prompt's, else "
                                         "from the labels).")
    max_text_tokens: int = _f(128, "Transcript tokens kept.")
    label_eos: bool = _f(True, "Train the LLM to stop after the label (EOS).")
    adapter: AdapterConfig = _f(AdapterConfig, "The adapter's hyper-parameters (its own options).", cli=False)
    # data
    modalities: list[str] = _f(lambda: ["audio", "video"], "Non-text modalities: audio,video | audio | "
                               "video | text (text only: audio/video read as missing).")
    normalize: bool = _f(True, "Standardize features with the train split's statistics.")
    align: str = _f("none", "Alignment view of the store (none | word | rate).")
    max_len: int | None = _f(None, "Frames kept per modality (default: all).")
    train_split: str = _f("train", "Name of the training split.")
    valid_split: str = _f("valid", "Name of the validation split (early stopping).")
    test_split: str = _f("test", "Name of the test split (optional).")
    split_seed: int | None = _f(None, "Make a grouped split with this seed instead of the store's "
                                "(a store without splits: seed 0).")
    ratios: list[float] = _f(lambda: [0.8, 0.1, 0.1], "train,valid,test shares of a split made by "
                             "msekit train.")
    num_workers: int = _f(0, "DataLoader workers.")
    # optimization
    epochs: int = _f(20, "Maximum epochs (early stopping may end sooner).")
    batch_size: int = _f(8, "Samples per process and micro-batch.")
    eval_batch_size: int | None = _f(None, "Validation batch size (default: 2 x batch_size).")
    grad_accum: int = _f(1, "Micro-batches per optimizer step.")
    lr: float = _f(5e-3, "Peak learning rate (the paper presets: 5e-5 to 5e-3).")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    decay_biases: bool = _f(True, "Weight decay on biases too (the authors' AdamW); --no-decay-biases "
                            "exempts them, as transformers' Trainer does.")
    adam_eps: float = _f(1e-4, "AdamW eps (authors: 1e-4).")
    out_proj_lr: float | None = _f(None, "Learning-rate multiplier of the encoders' projection into the "
                                   "LLM (out_proj); default 0.01 with --linear-path, 1 without (see README).")
    input_noise: float = _f(0.0, "Gaussian noise std added to the standardized audio/video frames "
                            "in training (feature-std units; 0: off).")
    class_loss: float = _f(0.0, "Classes: add this weight x the cross-entropy over the class strings' "
                           "likelihoods to the label-token loss (0: the paper's loss alone).")
    ema: float = _f(0.0, "Average the adapter's weights over the optimizer steps with this EMA decay "
                    "(e.g. 0.9); validation and the saved adapter use the average (0: off).")
    warmup_epochs: float | None = _f(None, "Cosine schedule horizon in epochs (default: epochs).")
    warmup_ratio: float = _f(0.1, "Share of the horizon that warms up linearly.")
    max_grad_norm: float | None = _f(None, "Clip gradients to this norm (authors: none).")
    patience: int | None = _f(None, "Early-stop patience (default: 10 regression, 8 classes).")
    start_margin: float = _f(1.0, "With --linear-path, an epoch replaces the warm start only when its validation "
                             "metric beats the start's by more than this many bootstrap standard errors of "
                             "the start's metric (the one-standard-error rule; 0: any improvement).")
    keep: str = _f("best", "best | last: the adapter of the best validation epoch (early stopping), or "
                   "of the last epoch (no early stopping; for validation sets too small to choose on).")
    seed: int = _f(1111, "Random seed of a single run.")
    seeds: list[int] | None = _f(None, "A multi-seed run: comma-separated seeds or 'paper' "
                                 "(1111,...,5555), each into OUT/seed-<s>/, then OUT/summary.json.")
    precision: str = _f("auto", "auto | fp32 | bf16 | fp16 (GPU).")
    grad_checkpointing: bool = _f(False, "Recompute LLM activations in backward.")
    device: str | None = _f(None, "cpu, cuda, cuda:1 (default: cuda if available).")
    val_decode: str = _f("score", "Decoding for validation: score | generate.")
    val_loss: bool = _f(True, "Also compute the validation loss (one more forward pass).")
    baseline: bool = _f(True, "Fit a linear probe on utterance means for comparison in the report.")
    # bookkeeping
    checkpoint_every: int = _f(0, "Also checkpoint every N optimizer steps (0: epoch ends only).")
    stop_after: int | None = _f(None, "Stop after N optimizer steps, as if killed (testing).")
    resume: bool | None = _f(None, "Resume from the run folder's checkpoint (default: when there is one).")
    overwrite: bool = _f(False, "Start over in an existing run folder.")
    log_every: int = _f(1, "Log the training loss every N optimizer steps.")
    report: bool = _f(True, "Write report.md and plots at the end.")
    progress: bool = _f(True, "Progress bar and tables.", cli=False)

    def __post_init__(self) -> None:
        if isinstance(self.adapter, dict):
            self.adapter = AdapterConfig.from_dict(self.adapter)
        if self.precision not in PRECISIONS:
            raise MsekitError(f"precision must be one of {PRECISIONS}, received {self.precision!r}")
        if self.keep not in KEEP_MODES:
            raise MsekitError(f"keep must be one of {KEEP_MODES}, received {self.keep!r}")
        if self.task not in (None, "regression", "classification"):
            raise MsekitError(f"task must be 'regression', 'classification' or None, received {self.task!r}")
        if isinstance(self.modalities, str):
            self.modalities = [m.strip() for m in self.modalities.replace("text", "").split(",") if m.strip()]
        bad = sorted(set(self.modalities) - {"audio", "video"})
        if bad:
            raise MsekitError(f"modalities must be a subset of ['audio', 'video'] (text is always used), received {bad}")
        for name in ("epochs", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise MsekitError(f"{name} must be >= 1, received {getattr(self, name)}")
        if self.val_decode not in ("score", "generate"):
            raise MsekitError(f"val_decode must be 'score' or 'generate', received {self.val_decode!r}")
        if not 0 <= self.input_noise < 10:
            raise MsekitError(f"input_noise must be in [0, 10) (feature-std units), received {self.input_noise}")
        if not 0 <= self.class_loss <= 100:
            raise MsekitError(f"class_loss must be in [0, 100] (0: off), received {self.class_loss}")
        if not 0 <= self.ema < 1:
            raise MsekitError(f"ema must be in [0, 1) (0: off; e.g. 0.9), received {self.ema}")
        if self.out_proj_lr is not None and not self.out_proj_lr >= 0:
            raise MsekitError(f"out_proj_lr must be >= 0 (a multiplier of lr), received {self.out_proj_lr}")
        if not self.start_margin >= 0:
            raise MsekitError(f"start_margin must be >= 0 (standard errors; 0: any improvement), "
                              f"received {self.start_margin}")
        if not 0 <= self.warmup_ratio < 1:
            raise MsekitError(f"warmup_ratio must be in [0, 1), received {self.warmup_ratio}")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise MsekitError(f"seeds must be distinct and at least one, received {self.seeds}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the adapter nested)."""
        d = asdict(self)
        d["adapter"] = self.adapter.to_dict()
        return d


def presets_path() -> Path:
    return pipelines_file("presets.json")


def load_presets() -> dict[str, Any]:
    """``pipelines/presets.json`` as a dict (``defaults``, ``presets``, ``reference``)."""
    return json.loads(presets_path().read_text(encoding="utf-8"))


def reference_results(preset: str | None) -> dict[str, Any] | None:
    """The paper's reported numbers for a preset's dataset (None for other presets)."""
    if not preset:
        return None
    doc = load_presets()
    dataset = doc["presets"].get(preset, {}).get("reference")
    return doc.get("reference", {}).get(dataset) if dataset else None


def _adapter_names() -> set[str]:
    return {f.name for f in fields(AdapterConfig)} - set(ADAPTER_DERIVED)


def resolve_config(preset: str | None = None, **overrides: Any) -> TrainConfig:
    """Builds a TrainConfig: dataclass defaults < presets' defaults < the preset < overrides.

    Args:
        preset: a preset name (e.g. ``mosei-llama2-7b``) or None.
        **overrides: TrainConfig fields, or AdapterConfig fields (routed into ``adapter``);
            None values are ignored (= not given).

    Raises:
        MsekitError: an unknown preset or field.
    """
    known, adapter_known = {f.name for f in fields(TrainConfig)}, _adapter_names()
    unknown = sorted(set(overrides) - known - adapter_known)
    if unknown:
        raise MsekitError(f"unknown training option(s) {unknown}; allowed: {sorted(known | adapter_known)}")
    values: dict[str, Any] = {}
    if preset:
        doc = load_presets()
        if preset not in doc["presets"]:
            raise MsekitError(f"preset must be one of {sorted(doc['presets'])}, received {preset!r}")
        values.update(doc.get("defaults", {}))
        values.update({k: v for k, v in doc["presets"][preset].items() if k != "reference"})
        values["preset"] = preset
    values.update({k: v for k, v in overrides.items() if v is not None})
    adapter = dict(values.pop("adapter", None) or {})
    if isinstance(adapter, AdapterConfig):
        adapter = adapter.to_dict()
    adapter |= {k: values.pop(k) for k in list(values) if k in adapter_known}
    base = AdapterConfig().to_dict()
    cfg = TrainConfig(**values, adapter=AdapterConfig.from_dict(base | adapter))
    if not cfg.out and cfg.store:
        cfg.out = default_out(cfg.store, cfg.llm)
    return cfg


def default_out(store: str, llm: str) -> str:
    """``runs/<store stem>-<llm>``, e.g. ``runs/feats-smollm2-135m`` (an LLM id's last part)."""
    name = Path(str(llm).rstrip("/")).name or "llm"
    return str(Path("runs") / f"{Path(store).stem}-{name}")


def for_seed(cfg: TrainConfig, seed: int, out: str) -> TrainConfig:
    """The config of one seed of a multi-seed run."""
    return replace(cfg, seed=seed, seeds=None, out=out)


def parse_seeds(text: str | None, preset: str | None = None) -> list[int] | None:
    """``--seeds``: '1111,2222' or 'paper' (the paper's five seeds).

    Raises:
        MsekitError: not a list of integers.
    """
    if text is None:
        return None
    if text.strip().lower() == "paper":
        return list(PAPER_SEEDS)
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MsekitError(f"--seeds must be comma-separated integers or 'paper', received {text!r}") from None
