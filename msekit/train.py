"""Training the MSE-Adapter on a frozen LLM (``msekit train``).

``train(config)`` reads top to bottom: config and distributed set-up, data, model (scratch or
resume), optimizer and schedule, the evaluation function, then the loop. Only the adapter
trains and only the adapter is ever saved.

The authors' recipe: AdamW (eps 1e-4), a cosine schedule whose first 10% is a linear warm-up,
over ``batches per epoch x warmup_epochs`` optimizer steps, stepped per batch; early stopping on
the validation split (MAE for regression, weighted F1 for classes) with patience 10 / 8; the
best validation checkpoint is the result. fp16 autocast + GradScaler on a GPU (bf16 when the
GPU has it, no scaler needed).

Run folder (``--out``)::

    train_config.json    the fully resolved TrainConfig (+ task, labels, prompt, world size)
    adapter/             the best adapter (adapter_config.json + adapter_model.safetensors)
    checkpoint/          the last state for --resume: adapter + optimizer tensors and RNG
                         states in safetensors, everything else in trainer_state.json (no pickle)
    metrics.jsonl        one JSON object per logged step ("train") and per epoch ("valid")
    final_metrics.json, report.md, loss_curves.png, confusion_matrix.png | scatter.png

Distributed: under ``torchrun`` / ``accelerate launch`` (WORLD_SIZE > 1) the process group is
initialised from the environment, the adapter alone is wrapped in DDP, every rank reads its
share of each global batch, validation is sharded and gathered, and only rank 0 writes.
``batch_size`` is per process: the global batch is batch_size x grad_accum x world size.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msekit.errors import MsekitError
from msekit.llm import DEFAULT_LLM
from msekit.metrics import classification_metrics, primary_metric, regression_metrics
from msekit.predict import BatchTransform, Predictions, predict_dataset
from msekit.prompts import pipelines_file

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CHECKPOINT_DIR = "checkpoint"
ADAPTER_DIR = "adapter"
# Fields that may change between a run and its resumption without changing the result.
_RESUME_FREE = {"resume", "overwrite", "stop_after", "progress", "num_workers", "device", "log_every",
                "report", "store", "out"}


@dataclass
class TrainConfig:
    """Everything ``msekit train`` needs; saved as ``train_config.json`` in the run folder.

    Defaults < ``pipelines/presets.json`` defaults < the preset < explicit values
    (:func:`resolve_config`).
    """

    store: str = field(default="", metadata={"help": "The feature store (.h5)."})
    out: str = field(default="runs/default", metadata={"help": "The run folder."})
    preset: str | None = field(default=None, metadata={"help": "A preset of pipelines/presets.json."})
    llm: str = field(default=DEFAULT_LLM, metadata={"help": "LLM alias, Hugging Face id or folder."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the LLM repository's code."})
    # task, labels, prompt
    task: str | None = field(default=None, metadata={"help": "regression | classification; None: from the store."})
    label_names: list[str] | None = field(default=None, metadata={"help": "Class names in index order (subset of the store's labels)."})
    prompt: str | None = field(default=None, metadata={"help": "Prompt preset or template; None: the task's template."})
    language: str = field(default="en", metadata={"help": "Prompt language of a template (en | zh)."})
    label_format: str | None = field(default=None, metadata={"help": "Label format override (decimal1, signed_decimal1, index, name)."})
    prompt_text: str | None = field(default=None, metadata={"help": "Replaces the prompt's instruction text (markers and labels stay)."})
    value_range: list[float] | None = field(default=None, metadata={"help": "Regression range; None: the prompt's, else from the labels."})
    max_text_tokens: int = field(default=128, metadata={"help": "Transcript tokens kept."})
    label_eos: bool = field(default=True, metadata={"help": "Train the LLM to stop after the label (EOS)."})
    # adapter
    audio_hidden: int = field(default=64, metadata={"help": "Audio LSTM hidden size."})
    video_hidden: int = field(default=32, metadata={"help": "Video LSTM hidden size."})
    num_pseudo_tokens: int = field(default=4, metadata={"help": "Pseudo tokens n."})
    pseudo_token_mode: str = field(default="linear1", metadata={"help": "linear1 (paper) | full."})
    text_pooling: str = field(default="mean_real", metadata={"help": "mean_real | mean_all (paper)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the fused vector."})
    # data
    modalities: list[str] = field(default_factory=lambda: ["audio", "video"],
                                  metadata={"help": "Non-text modalities used; [] = text only (lengths zeroed)."})
    normalize: bool = field(default=True, metadata={"help": "Standardize features with train-split stats."})
    align: str = field(default="none", metadata={"help": "Alignment view of the store."})
    max_len: int | None = field(default=None, metadata={"help": "Frames kept per modality (None: all)."})
    train_split: str = "train"
    valid_split: str = "valid"
    test_split: str = "test"
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers."})
    # optimization
    epochs: int = field(default=20, metadata={"help": "Maximum epochs (early stopping may end sooner)."})
    batch_size: int = field(default=8, metadata={"help": "Samples per process and micro-batch."})
    eval_batch_size: int | None = field(default=None, metadata={"help": "Default: 2 x batch_size."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    lr: float = 5e-4
    weight_decay: float = 0.01
    adam_eps: float = field(default=1e-4, metadata={"help": "AdamW eps (authors: 1e-4)."})
    warmup_epochs: float | None = field(default=None, metadata={"help": "Cosine horizon in epochs; None: epochs."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of the horizon that warms up linearly."})
    max_grad_norm: float | None = field(default=None, metadata={"help": "Gradient clipping (authors: none)."})
    patience: int | None = field(default=None, metadata={"help": "Early-stop patience; None: 10 regression, 8 classes."})
    seed: int = 1111
    seeds: list[int] | None = field(default=None, metadata={"help": "The preset's seed list (recorded only)."})
    precision: str = field(default="auto", metadata={"help": "auto | fp32 | bf16 | fp16 (GPU)."})
    grad_checkpointing: bool = field(default=False, metadata={"help": "Recompute LLM activations in backward."})
    device: str | None = field(default=None, metadata={"help": "Default: cuda if available."})
    val_decode: str = field(default="score", metadata={"help": "Decoding for validation: score | generate."})
    val_loss: bool = field(default=True, metadata={"help": "Also compute the validation loss (one more forward pass)."})
    # bookkeeping
    checkpoint_every: int = field(default=0, metadata={"help": "Also checkpoint every N optimizer steps (0: epoch ends only)."})
    stop_after: int | None = field(default=None, metadata={"help": "Stop (as if killed) after N optimizer steps."})
    resume: bool | None = field(default=None, metadata={"help": "None: resume when the run folder has a checkpoint."})
    overwrite: bool = field(default=False, metadata={"help": "Start over in an existing run folder."})
    log_every: int = 1
    report: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise MsekitError(f"precision must be one of {PRECISIONS}, received {self.precision!r}")
        if self.task not in (None, "regression", "classification"):
            raise MsekitError(f"task must be 'regression', 'classification' or None, received {self.task!r}")
        if isinstance(self.modalities, str):
            self.modalities = [m for m in self.modalities.replace("text", "").split(",") if m.strip()]
        bad = sorted(set(self.modalities) - {"audio", "video"})
        if bad:
            raise MsekitError(f"modalities must be a subset of ['audio', 'video'] (text is always used), received {bad}")
        for name in ("epochs", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise MsekitError(f"{name} must be >= 1, received {getattr(self, name)}")
        if self.val_decode not in ("score", "generate"):
            raise MsekitError(f"val_decode must be 'score' or 'generate', received {self.val_decode!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise MsekitError(f"warmup_ratio must be in [0, 1), received {self.warmup_ratio}")


def presets_path() -> Path:
    return pipelines_file("presets.json")


def load_presets() -> dict[str, Any]:
    """``pipelines/presets.json`` as a dict (``defaults`` and ``presets``)."""
    return json.loads(presets_path().read_text(encoding="utf-8"))


def resolve_config(preset: str | None = None, **overrides: Any) -> TrainConfig:
    """Builds a TrainConfig: dataclass defaults < presets' defaults < the preset < overrides.

    Args:
        preset: a preset name (e.g. ``mosei-llama2-7b``) or None.
        **overrides: TrainConfig fields; None values are ignored (= not given).

    Raises:
        MsekitError: an unknown preset or field.
    """
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise MsekitError(f"unknown training option(s) {unknown}; allowed: {sorted(known)}")
    values: dict[str, Any] = {}
    if preset:
        doc = load_presets()
        if preset not in doc["presets"]:
            raise MsekitError(f"preset must be one of {sorted(doc['presets'])}, received {preset!r}")
        values.update(doc.get("defaults", {}))
        values.update(doc["presets"][preset])
        values["preset"] = preset
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**{k: v for k, v in values.items() if k in known})


# ----------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_indices(pool: list[int], seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """This rank's sample order for an epoch, as DistributedSampler makes it: one permutation
    seeded by (seed + epoch), padded by repetition to a multiple of the world size, every
    world-th element from ``rank`` on. Consecutive micro-batches of the ranks together are then
    exactly the consecutive batches a single process with a world-times larger batch sees."""
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    order = [pool[i] for i in torch.randperm(len(pool), generator=g).tolist()]
    order += order[: (-len(order)) % world]
    return order[rank::world]


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    """LR factor per optimizer step: linear warm-up, then half a cosine to 0 at ``total_steps``
    (held at 0 after), as transformers' get_cosine_schedule_with_warmup within the horizon."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None) -> Distributed:
    """Initialises the process group from torchrun's environment when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return Distributed(rank=rank, world=world, local_rank=local)


class _AdapterDDP(torch.nn.parallel.DistributedDataParallel):
    """DDP around the adapter that still answers ``.config`` etc. like the adapter itself."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _gather(obj: Any, dd: Distributed) -> list[Any]:
    if dd.world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dd.world
    dist.all_gather_object(out, obj)
    return out


def _precision(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler)."""
    if device.type != "cuda" or cfg.precision == "fp32":
        return None, False
    if cfg.precision == "auto":
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    return (torch.bfloat16, False) if cfg.precision == "bf16" else (torch.float16, True)


def _enable_grad_checkpointing(llm) -> None:
    """Gradient checkpointing on a frozen LLM: HF only checkpoints layers in training mode, so
    the decoder layers (not their children: dropout stays off) are flagged as training."""
    llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for m in llm.modules():
        if getattr(m, "gradient_checkpointing", False):
            m.training = True


# ----------------------------------------------------------------------------- checkpoints
def _json_rng() -> dict[str, Any]:
    st = np.random.get_state()
    pst = random.getstate()
    return {"python": [pst[0], list(pst[1]), pst[2]],
            "numpy": [st[0], st[1].tolist(), int(st[2]), int(st[3]), float(st[4])]}


def _restore_json_rng(d: dict[str, Any]) -> None:
    p = d["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    n = d["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save_checkpoint(folder: Path, adapter, optimizer, scheduler, scaler, state: dict[str, Any]) -> None:
    """Writes the resumable state atomically: tensors as safetensors, the rest as JSON."""
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in adapter.state_dict().items()},
              str(tmp / "adapter_model.safetensors"))
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in opt["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{pid}.{k}"] = v
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    save_file(rng, str(tmp / "rng_state.safetensors"))
    doc = dict(state)
    doc["optimizer"] = {"param_groups": opt["param_groups"], "scalars": scalars}
    doc["scheduler"] = scheduler.state_dict()
    doc["scaler"] = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
    doc["rng"] = _json_rng()
    (tmp / "trainer_state.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def load_checkpoint(folder: Path, adapter, optimizer, scheduler, scaler) -> dict[str, Any]:
    """Restores what :func:`save_checkpoint` wrote; returns the trainer state."""
    from safetensors.torch import load_file

    doc = json.loads((folder / "trainer_state.json").read_text())
    adapter.load_state_dict(load_file(str(folder / "adapter_model.safetensors")))
    tensors = load_file(str(folder / "optimizer.safetensors"))
    dev = next(adapter.parameters()).device
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        # AdamW keeps 'step' on the CPU unless capturable/fused; moments live with the params
        state.setdefault(int(pid), {})[name] = v if name == "step" else v.to(dev)
    for key, v in doc["optimizer"]["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": doc["optimizer"]["param_groups"]})
    scheduler.load_state_dict(doc["scheduler"])
    if scaler is not None and doc.get("scaler"):
        scaler.load_state_dict(doc["scaler"])
    rng = load_file(str(folder / "rng_state.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("torch_cuda_"))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    _restore_json_rng(doc["rng"])
    return doc


# ----------------------------------------------------------------------------- evaluation
def compute_metrics(pred: Predictions, convention: str | None = None) -> dict[str, Any]:
    """Metrics of labelled predictions; unparsed answers are counted and left out."""
    keep = pred.parsed & (pred.labels >= 0 if pred.task == "classification" else np.isfinite(pred.labels))
    labelled = (pred.labels >= 0) if pred.task == "classification" else np.isfinite(pred.labels)
    n_unparsed = int((labelled & ~pred.parsed).sum())
    if not keep.any():
        name, higher = primary_metric(pred.task)
        return {"convention": convention or pred.task, "n": 0, "unparsed": n_unparsed,
                name: (0.0 if higher else math.inf)}
    if pred.task == "classification":
        m = classification_metrics(pred.values[keep], pred.labels[keep], pred.label_names)
    else:
        m = regression_metrics(pred.values[keep], pred.labels[keep], convention)
    m["unparsed"] = n_unparsed
    m["decode"] = pred.decode
    return m


# ----------------------------------------------------------------------------- the trainer
@dataclass
class TrainResult:
    """What :func:`train` returns (rank 0 has the full picture; other ranks get the same)."""

    run_dir: Path
    best_epoch: int
    best_metric: float | None
    metric: str
    epochs_run: int
    global_step: int
    stopped_early: bool
    interrupted: bool = False
    final: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: Any = None


def _build_prompt(cfg: TrainConfig, task: str, label_names: list[str] | None, train_labels: list):
    from msekit.prompts import get_prompt

    name = cfg.prompt or task
    value_range = tuple(cfg.value_range) if cfg.value_range else None
    if task == "regression" and value_range is None and name == "regression":
        ys = np.asarray([y for y in train_labels if y is not None], float)
        lim = 1.0 if ys.size and np.all(np.abs(ys) <= 1.0) else 3.0  # SIMS-like vs MOSEI-like
        value_range = (-lim, lim)
    spec = get_prompt(name, label_names=label_names if task == "classification" else None,
                      value_range=value_range if name == "regression" else None,
                      language=cfg.language, label_format=cfg.label_format)
    if cfg.prompt_text:
        spec.prompt, spec.name = cfg.prompt_text, f"{spec.name}+custom"
    if spec.task != task:
        raise MsekitError(f"prompt {name!r} is for {spec.task}, the store's task is {task}; "
                          f"pass --task or another --prompt")
    return spec


def train(config: TrainConfig, *, llm=None, tokenizer=None) -> TrainResult:
    """Trains an adapter; see the module docstring for the run folder and the recipe.

    Args:
        config: the resolved :class:`TrainConfig`.
        llm, tokenizer: an already loaded (frozen) LLM, e.g. a tiny one in tests; default:
            ``load_llm(config.llm)``.

    Returns:
        :class:`TrainResult`; ``.model`` holds the MultimodalLLM with the best adapter loaded.

    Raises:
        MsekitError: bad store / config, or a run folder that holds another run.
    """
    from msekit.adapter import AdapterConfig, MSEAdapter
    from msekit.dataset import StoreDataset, ViewConfig
    from msekit.llm import llm_hidden_size, load_llm
    from msekit.mllm import MultimodalLLM
    from msekit.store import StoreReader

    cfg = config
    t_start = time.time()
    # -------------------------------------------------------------- distributed, device, seed
    dd = setup_distributed(cfg.device)
    if cfg.device:
        device = torch.device(cfg.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", dd.local_rank)
    else:
        device = torch.device("cpu")
    seed_everything(cfg.seed)
    run_dir = Path(cfg.out)
    ckpt_dir = run_dir / CHECKPOINT_DIR
    has_ckpt = (ckpt_dir / "trainer_state.json").is_file()
    if cfg.overwrite and dd.main and run_dir.exists():
        for name in (CHECKPOINT_DIR, ADAPTER_DIR, "metrics.jsonl", "train_config.json", "final_metrics.json"):
            p = run_dir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    if dd.world > 1:
        import torch.distributed as dist

        dist.barrier()
    has_ckpt = has_ckpt and not cfg.overwrite
    resume = has_ckpt if cfg.resume is None else cfg.resume
    if cfg.resume and not has_ckpt:
        raise MsekitError(f"--resume: {ckpt_dir} holds no checkpoint to resume from")
    if not resume and (run_dir / "train_config.json").is_file():
        raise MsekitError(f"{run_dir} already holds a run; use --resume, --overwrite or another --out")

    # -------------------------------------------------------------- data
    if not Path(cfg.store).is_file():
        raise MsekitError(f"store not found: {cfg.store!r} (make one with `msekit extract`)")
    view = ViewConfig(align=cfg.align, max_len=cfg.max_len, normalize=False, task=cfg.task,
                      label_names=cfg.label_names)
    if cfg.label_names:  # a subset of the store's classes: keep only samples of those classes
        view.task = "classification"
    train_ds = _dataset(StoreDataset, cfg.store, cfg.train_split, view, subset=bool(cfg.label_names))
    task, label_names = train_ds.task, train_ds.label_names
    view.task, view.label_names = task, label_names
    valid_ds = _dataset(StoreDataset, cfg.store, cfg.valid_split, view, subset=bool(cfg.label_names))
    test_ds = _optional_dataset(StoreDataset, cfg.store, cfg.test_split, view, subset=bool(cfg.label_names))
    if valid_ds is None:
        raise MsekitError(f"{cfg.store}: no samples in the validation split {cfg.valid_split!r}, needed for "
                          "early stopping; run `msekit split` or pass --valid-split")
    pool = [i for i, y in enumerate(train_ds.labels) if y is not None]
    if not pool:
        raise MsekitError(f"{cfg.store}: the {cfg.train_split!r} split has no labelled samples")
    norm = {}
    if cfg.normalize and train_ds.feature_dims:  # train-split statistics, from the dataset
        stats = StoreDataset(cfg.store, cfg.train_split, ViewConfig(align=cfg.align, normalize=True)).norm
        norm = {m: stats[m] for m in stats if m in cfg.modalities}
    drop = [m for m in ("audio", "video") if m not in cfg.modalities]
    transform = BatchTransform(norm=norm, drop=drop)
    with StoreReader(cfg.store) as r:
        store_settings = r.settings
        feature_names = {m: r.feature_names(m) for m in r.modalities}

    # -------------------------------------------------------------- model
    autocast_dtype, use_scaler = _precision(cfg, device)
    if llm is None:
        llm, tokenizer = load_llm(cfg.llm, trust_remote_code=cfg.trust_remote_code, device=device,
                                  dtype=autocast_dtype or torch.float32)
    prompt = _build_prompt(cfg, task, label_names, [train_ds.labels[i] for i in pool])
    acfg = AdapterConfig(
        llm_hidden_size=llm_hidden_size(llm),
        audio_dim=train_ds.feature_dims.get("audio", 0), video_dim=train_ds.feature_dims.get("video", 0),
        audio_hidden=cfg.audio_hidden, video_hidden=cfg.video_hidden,
        num_pseudo_tokens=cfg.num_pseudo_tokens, pseudo_token_mode=cfg.pseudo_token_mode,
        text_pooling=cfg.text_pooling, dropout=cfg.dropout,
    )
    adapter = MSEAdapter(acfg).to(device)  # same seed on every rank: same initial weights
    model = MultimodalLLM(llm, tokenizer, adapter, prompt, max_text_tokens=cfg.max_text_tokens,
                          label_eos=cfg.label_eos, base_llm=cfg.llm)
    if cfg.grad_checkpointing:
        _enable_grad_checkpointing(llm)
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    micro_per_epoch = math.ceil(len(epoch_indices(pool, cfg.seed, 0, dd.rank, dd.world)) / cfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    horizon = max(1, round(steps_per_epoch * (cfg.warmup_epochs or cfg.epochs)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(horizon, int(cfg.warmup_ratio * horizon)))
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    metric, higher = primary_metric(task)
    patience = cfg.patience if cfg.patience is not None else (8 if task == "classification" else 10)
    state = {"epoch": 0, "micro_in_epoch": 0, "global_step": 0, "best": None, "best_epoch": -1,
             "bad_epochs": 0, "finished": False}
    meta_extra = {
        "llm_name": cfg.llm, "trust_remote_code": cfg.trust_remote_code,
        "feature_names": {m: feature_names[m] for m in feature_names if m in train_ds.feature_dims},
        "store_settings": store_settings, "transform": transform.to_dict(),
        "view": {"align": cfg.align, "max_len": {m: v for m, v in train_ds.max_len.items() if v}
                 if any(train_ds.max_len.values()) else None},
        "train_config": "../train_config.json",
    }
    resolved = asdict(cfg) | {"task": task, "label_names": label_names, "prompt_spec": prompt.to_dict(),
                              "world_size": dd.world, "patience_resolved": patience,
                              "scheduler_horizon_steps": horizon, "steps_per_epoch": steps_per_epoch,
                              "adapter": acfg.to_dict(), "device": str(device),
                              "autocast": str(autocast_dtype) if autocast_dtype else None}
    if resume:
        _check_resume(run_dir, resolved)
        state.update(load_checkpoint(ckpt_dir, adapter, optimizer, scheduler, scaler))
        if state.get("finished"):
            raise MsekitError(f"{run_dir} holds a finished run; use --overwrite or another --out")
        if dd.main:
            _truncate_log(run_dir / "metrics.jsonl", state["global_step"])
    elif dd.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.json").write_text(json.dumps(resolved, indent=2, default=str) + "\n")
    if dd.world > 1:  # only the adapter is wrapped: the frozen LLM needs no gradient sync
        model.adapter = _AdapterDDP(adapter, device_ids=[device.index] if device.type == "cuda" else None,
                                    find_unused_parameters=True)
    if dd.main and cfg.progress:
        print(f"{trainable_line(model)} | task {task} | {len(pool)} train samples x {dd.world} process(es)"
              + (f" | resumed at step {state['global_step']}" if resume else ""))

    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size

    def evaluate(ds, decode: str = cfg.val_decode) -> tuple[dict[str, Any], float, Predictions]:
        """Sharded over ranks, gathered: metrics, mean label loss, predictions."""
        shard = list(range(len(ds)))[dd.rank::dd.world]
        pred = predict_dataset(model, ds, shard, batch_size=eval_bs, decode=decode, transform=transform)
        loss_sum, count = (_label_loss(model, ds, shard, eval_bs, transform, autocast_dtype, device)
                           if cfg.val_loss else (math.nan, 0))
        parts = _gather((pred, loss_sum, count), dd)
        pred = _merge_predictions([p[0] for p in parts])
        loss = sum(p[1] for p in parts) / max(1, sum(p[2] for p in parts)) if cfg.val_loss else math.nan
        return compute_metrics(pred), loss, pred

    # -------------------------------------------------------------- the loop
    log = _Log(run_dir / "metrics.jsonl", dd.main)
    bar = _TrainBar(dd.main and cfg.progress, steps_per_epoch)
    interrupted = stopped_early = False
    epoch = state["epoch"]
    from torch.utils.data import DataLoader

    from msekit.dataset import collate

    while epoch < cfg.epochs and not interrupted:
        model.train()
        if cfg.grad_checkpointing:
            _enable_grad_checkpointing(llm)
        order = epoch_indices(pool, cfg.seed, epoch, dd.rank, dd.world)
        micro = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        groups = [micro[i:i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)]
        start_group = state["micro_in_epoch"] // cfg.grad_accum
        bar.start(epoch, start_group)
        for g in range(start_group, len(groups)):
            group = groups[g]
            loader = DataLoader(train_ds, batch_sampler=group, collate_fn=collate, num_workers=cfg.num_workers)
            total_loss = 0.0
            for k, batch in enumerate(loader):
                batch = transform(batch)
                last = k == len(group) - 1
                sync = nullcontext() if (last or dd.world == 1) else model.adapter.no_sync()
                with sync:
                    with _autocast(device, autocast_dtype):
                        loss = model(batch) / len(group)  # mean over the group's micro-batches
                    scaler.scale(loss).backward()
                total_loss += loss.item()
            if cfg.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]  # the rate this step used
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():
                # fp16: the GradScaler skips a step whose gradients overflowed (the first ones,
                # while it finds its scale); the schedule still follows the step count.
                warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`")
                scheduler.step()
            state["global_step"] += 1
            state["micro_in_epoch"] = (g + 1) * cfg.grad_accum
            step = state["global_step"]
            if dd.world > 1:
                total_loss = sum(_gather(total_loss, dd)) / dd.world
            bar.advance(total_loss)
            if step % cfg.log_every == 0:
                log.write({"kind": "train", "epoch": epoch, "step": step, "loss": total_loss, "lr": lr})
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and g + 1 < len(groups) and dd.main:
                save_checkpoint(ckpt_dir, adapter, optimizer, scheduler, scaler, _public(state, epoch))
            if cfg.stop_after is not None and step >= cfg.stop_after:
                interrupted = True  # as if killed here: nothing more is written
                break
        bar.stop()
        if interrupted:
            break
        # ---------------------------------------------------------- validation, early stopping
        m, vloss, _ = evaluate(valid_ds)
        value = m.get(metric)
        improved = state["best"] is None or (value > state["best"] if higher else value < state["best"])
        if improved:
            state["best"], state["best_epoch"], state["bad_epochs"] = value, epoch, 0
            if dd.main:
                model.save_adapter(run_dir / ADAPTER_DIR, meta_extra | {"best_epoch": epoch, metric: value}) \
                    if dd.world == 1 else _save_unwrapped(model, adapter, run_dir / ADAPTER_DIR,
                                                          meta_extra | {"best_epoch": epoch, metric: value})
        else:
            state["bad_epochs"] += 1
        log.write({"kind": "valid", "epoch": epoch, "step": state["global_step"], "loss": vloss,
                   **{k: v for k, v in m.items() if isinstance(v, int | float)}, "best": improved})
        if dd.main and cfg.progress:
            print(f"epoch {epoch}: valid loss {vloss:.4f} {metric} {value:.4f}"
                  + (" (best)" if improved else f" (best {state['best']:.4f} at epoch {state['best_epoch']})"))
        epoch += 1
        state["epoch"], state["micro_in_epoch"] = epoch, 0
        stopped_early = state["bad_epochs"] >= patience
        state["finished"] = stopped_early or epoch >= cfg.epochs
        if dd.main:
            save_checkpoint(ckpt_dir, adapter, optimizer, scheduler, scaler, _public(state, epoch))
        if stopped_early:
            if dd.main and cfg.progress:
                print(f"early stop: no {metric} improvement for {patience} epochs")
            break

    result = TrainResult(run_dir=run_dir, best_epoch=state["best_epoch"], best_metric=state["best"],
                         metric=metric, epochs_run=epoch, global_step=state["global_step"],
                         stopped_early=stopped_early, interrupted=interrupted, model=model)
    if dd.world > 1:
        model.adapter = adapter
    if interrupted:
        return result
    # -------------------------------------------------------------- final evaluation + report
    if dd.world > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has written the best adapter
    from safetensors.torch import load_file

    adapter.load_state_dict(load_file(str(run_dir / ADAPTER_DIR / "adapter_model.safetensors")))
    splits = {"valid": valid_ds} | ({"test": test_ds} if test_ds is not None else {})
    preds = {}
    for name, ds in splits.items():
        m, vloss, pred = evaluate(ds)
        m["loss"] = vloss
        result.final[name] = m
        preds[name] = pred
    if dd.main:
        final = {"best_epoch": state["best_epoch"], "metric": metric, "best_valid": state["best"],
                 "epochs_run": epoch, "global_step": state["global_step"], "stopped_early": stopped_early,
                 "seconds": round(time.time() - t_start, 1), "splits": result.final}
        (run_dir / "final_metrics.json").write_text(json.dumps(final, indent=2, default=_nan_null) + "\n")
        if cfg.report:
            from msekit.report import write_run_report

            write_run_report(run_dir, result.final, preds["test" if "test" in preds else "valid"], metric,
                             prompt.value_range, print_table=cfg.progress)
    return result


# ----------------------------------------------------------------------------- loop helpers
def trainable_line(model) -> str:
    from msekit.adapter import trainable_parameters_line

    adapter = getattr(model.adapter, "module", model.adapter)
    return trainable_parameters_line((adapter, model.llm))


def _dataset(cls, store, split, view, subset: bool):
    """A split of the store; with ``subset`` (label_names given), samples of other classes are
    dropped instead of refused."""
    if not subset:
        return cls(store, split, view)
    from msekit.dataset import ViewConfig

    full = cls(store, split, ViewConfig(align=view.align, max_len=view.max_len, normalize=False,
                                        task="classification"))
    keep = [i for i, y in enumerate(full.labels) if y is not None and full.label_names[y] in view.label_names]
    if not keep:
        raise MsekitError(f"{store}: split {split!r} has no samples of the classes {view.label_names}")
    return _Subset(full, keep, list(view.label_names))


def _optional_dataset(cls, store, split, view, subset: bool):
    try:
        return _dataset(cls, store, split, view, subset)
    except MsekitError as e:
        if "no samples in split" in str(e) or "has no samples of the classes" in str(e):
            return None
        raise


class _Subset(torch.utils.data.Dataset):
    """Some samples of a StoreDataset, with class indices remapped to a chosen label set."""

    def __init__(self, base, keep: list[int], label_names: list[str]) -> None:
        self.base, self.keep = base, keep
        self.task, self.label_names = "classification", label_names
        self.feature_dims, self.max_len = base.feature_dims, base.max_len
        remap = {base.label_names.index(n): k for k, n in enumerate(label_names)}
        self.labels = [remap[base.labels[i]] for i in keep]
        self.ids = [base.ids[i] for i in keep]
        self._remap = remap

    def __len__(self) -> int:
        return len(self.keep)

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        items = self.base.__getitems__([self.keep[i] for i in indices])
        batch = getattr(items, "batch", None)
        if batch is not None and batch.get("labels") is not None:
            batch["labels"] = torch.tensor([self._remap[int(y)] for y in batch["labels"]], dtype=torch.long)
        for it in items:
            it["label"] = self._remap[it["label"]] if it.get("label") is not None else None
        return items

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def _label_loss(model, ds, indices, batch_size, transform, dtype, device) -> tuple[float, int]:
    """Summed per-batch mean loss x batch size, and the sample count (for a mean loss)."""
    from torch.utils.data import DataLoader

    from msekit.dataset import collate

    was = model.training
    model.eval()
    total, n = 0.0, 0
    labelled = [i for i in indices if ds.labels[i] is not None]
    for batch in DataLoader(ds, batch_size=batch_size, sampler=labelled, collate_fn=collate):
        batch = transform(batch)
        with _autocast(device, dtype):
            loss = model(batch)
        total += float(loss) * len(batch["ids"])
        n += len(batch["ids"])
    model.train(was)
    return total, n


def _merge_predictions(parts: list[Predictions]) -> Predictions:
    if len(parts) == 1:
        return parts[0]
    p0 = parts[0]
    def cat(name):
        return (np.concatenate([getattr(p, name) for p in parts]))
    return Predictions(
        ids=[i for p in parts for i in p.ids], task=p0.task, values=cat("values"), parsed=cat("parsed"),
        labels=cat("labels"), probs=cat("probs") if p0.probs is not None else None,
        texts=[t for p in parts for t in p.texts] if p0.texts is not None else None,
        label_names=p0.label_names, decode=p0.decode, seconds=sum(p.seconds for p in parts))


def _save_unwrapped(model, adapter, out, meta) -> None:
    wrapped = model.adapter
    model.adapter = adapter
    try:
        model.save_adapter(out, meta)
    finally:
        model.adapter = wrapped


def _public(state: dict[str, Any], epoch: int) -> dict[str, Any]:
    return {k: state[k] for k in ("global_step", "best", "best_epoch", "bad_epochs", "finished")} | {
        "epoch": epoch, "micro_in_epoch": state["micro_in_epoch"]}


def _check_resume(run_dir: Path, resolved: dict[str, Any]) -> None:
    path = run_dir / "train_config.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    new = json.loads(json.dumps(resolved, default=str))
    diff = sorted(k for k in set(old) | set(new)
                  if k not in _RESUME_FREE and old.get(k) != new.get(k) and k not in ("device", "world_size"))
    if diff:
        raise MsekitError(f"{run_dir}: cannot resume with other settings ({', '.join(diff)} differ); "
                          "use the same options, --overwrite or another --out")


def _truncate_log(path: Path, step: int) -> None:
    """Drops log lines written after the checkpoint (they will be written again)."""
    if not path.is_file():
        return
    from msekit.report import read_metrics_log

    keep = [r for r in read_metrics_log(path)
            if r.get("step", 0) < step or (r.get("step", 0) == step and r.get("kind") == "train")
            or (r.get("kind") == "valid" and r.get("step", 0) <= step)]
    path.write_text("".join(json.dumps(r) + "\n" for r in keep))


def _nan_null(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else float(x)


class _Log:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, rec: dict[str, Any]) -> None:
        if self.enabled:
            rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}
            with self.path.open("a") as f:
                f.write(json.dumps(rec) + "\n")


class _TrainBar:
    """rich progress bar per epoch with the running loss (rank 0, when enabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self.p = enabled, total, None

    def start(self, epoch: int, done: int) -> None:
        if not self.enabled:
            return
        from msekit.progress import start_bar

        self.p = start_bar(f"epoch {epoch}", self.total, completed=done,
                           fields={"loss": "loss {task.fields[loss]}"})
        self.t = self.p.task_ids[0]
        self.run, self.n = 0.0, 0

    def advance(self, loss: float) -> None:
        if self.p is not None:
            self.run, self.n = self.run + loss, self.n + 1
            self.p.update(self.t, advance=1, loss=f"{self.run / self.n:.4f}")

    def stop(self) -> None:
        if self.p is not None:
            self.p.stop()
            self.p = None
