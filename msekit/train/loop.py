"""The trainer: ``train(config)`` in four steps that read top to bottom.

1. :func:`setup`: device and distributed set-up, the run folder (fresh or resumed), the data
   (``train.data``), the model (frozen LLM + a new adapter), the optimizer over the adapter's
   parameters only, the schedule, and the checkpoint to resume from.
2. :func:`train_epoch`: one DataLoader for the epoch, micro-batches accumulated into optimizer
   steps, the log and the progress bar, mid-epoch checkpoints.
3. :func:`validate_and_checkpoint`: validation, the best adapter, early stopping, the epoch-end
   checkpoint.
4. :func:`finish`: the best adapter reloaded and scored on valid and test, final_metrics.json,
   the report.

The authors' recipe: AdamW (eps 1e-4), a cosine schedule whose first 10% is a linear warm-up,
over ``batches per epoch x warmup_epochs`` optimizer steps, stepped per batch; early stopping on
the validation split (MAE for regression, weighted F1 for classes) with patience 10 / 8; the
best validation checkpoint is the result. fp16 autocast + GradScaler on a GPU (bf16 when the
GPU has it, no scaler needed).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from msekit.adapter.probe import OUT_PROJ_LR_PATH
from msekit.inference import Predictions, check_device, concat_predictions, predict_dataset
from msekit.metrics import compute_metrics, finite_json, json_metrics, primary_metric
from msekit.tokenfp import use_stored_token_ids
from msekit.train.augment import add_input_noise, noise_generator
from msekit.train.averaging import WeightAverage
from msekit.train.checkpoint import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    initial_state,
    prepare_run_dir,
    save_checkpoint,
)
from msekit.train.config import TrainConfig
from msekit.train.data import RunData, load_run_data
from msekit.train.distributed import AdapterDDP, Distributed, epoch_indices, setup_distributed
from msekit.train.monitor import MetricsLog, TrainBar


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


@dataclass
class Trainer:
    """Everything the loop touches, made once by :func:`setup`."""

    cfg: TrainConfig
    dd: Distributed
    device: torch.device
    run_dir: Path
    data: RunData
    model: Any  # the MultimodalLLM
    adapter: Any  # the bare MSEAdapter (model.adapter may be its DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    autocast: torch.dtype | None
    state: dict[str, Any]
    metric: str
    higher: bool
    patience: int
    steps_per_epoch: int
    meta: dict[str, Any]
    log: MetricsLog
    average: WeightAverage | None = None  # --ema: what validation and the saved adapter use
    t_start: float = field(default_factory=time.time)
    interrupted: bool = False
    stopped_early: bool = False

    def say(self, text: str) -> None:
        if self.dd.main and self.cfg.progress:
            print(text)


def train(config: TrainConfig, *, llm=None, tokenizer=None) -> TrainResult:
    """Trains an adapter; see the module docstring for the steps and the recipe.

    Args:
        config: the resolved :class:`TrainConfig`.
        llm, tokenizer: an already loaded (frozen) LLM, e.g. a tiny one in tests; default:
            ``load_llm(config.llm)``.

    Returns:
        :class:`TrainResult`; ``.model`` holds the MultimodalLLM with the best adapter loaded.

    Raises:
        MsekitError: bad store / config, or a run folder that holds another run.
    """
    t = setup(config, llm, tokenizer)
    if t.cfg.adapter.linear_path and t.state["best"] is None and t.state["global_step"] == 0:
        validate_start(t)
    while t.state["epoch"] < t.cfg.epochs:
        if not train_epoch(t) or validate_and_checkpoint(t):
            break
    return finish(t)


# ----------------------------------------------------------------------------- 1. set-up
def setup(cfg: TrainConfig, llm=None, tokenizer=None) -> Trainer:
    """Builds the :class:`Trainer` (see the module docstring)."""
    from msekit.adapter import MSEAdapter, trainable_parameters_line
    from msekit.llm import llm_hidden_size
    from msekit.mllm import MultimodalLLM
    from msekit.prompts import prompt_for_run
    from msekit.store import StoreReader

    check_device(cfg.device)
    dd = setup_distributed(cfg.device)
    device = torch.device(cfg.device) if cfg.device else (
        torch.device("cuda", dd.local_rank) if torch.cuda.is_available() else torch.device("cpu"))
    seed_everything(cfg.seed)
    run_dir = Path(cfg.out)
    resume = prepare_run_dir(cfg, dd, run_dir)
    notice = print if dd.main and cfg.progress else (lambda _: None)
    data = load_run_data(cfg, notice)

    autocast, use_scaler = _precision(cfg, device)
    if llm is None:
        llm, tokenizer = load_frozen_llm(cfg, device)
    prompt = prompt_for_run(cfg.prompt, data.task, label_names=data.label_names,
                            train_labels=[data.train.labels[i] for i in data.pool], value_range=cfg.value_range,
                            language=cfg.language, label_format=cfg.label_format, prompt_text=cfg.prompt_text)
    acfg = replace(cfg.adapter, llm_hidden_size=llm_hidden_size(llm),
                   audio_dim=data.train.feature_dims.get("audio", 0),
                   video_dim=data.train.feature_dims.get("video", 0))
    if acfg.linear_path:  # K classes, or one value
        acfg = replace(acfg, path_outputs=len(data.label_names) if data.task == "classification" else 1)
    adapter = MSEAdapter(acfg).to(device)  # same seed on every rank: same initial weights
    model = MultimodalLLM(llm, tokenizer, adapter, prompt, max_text_tokens=cfg.max_text_tokens,
                          label_eos=cfg.label_eos, base_llm=cfg.llm, class_loss=cfg.class_loss)
    out_proj_lr = cfg.out_proj_lr if cfg.out_proj_lr is not None else (OUT_PROJ_LR_PATH if acfg.linear_path else 1.0)
    groups = param_groups(adapter, cfg.weight_decay, cfg.decay_biases, cfg.lr, {"out_proj": out_proj_lr})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    micro = math.ceil(len(epoch_indices(data.pool, cfg.seed, 0, dd.rank, dd.world)) / cfg.batch_size)
    steps_per_epoch = math.ceil(micro / cfg.grad_accum)
    horizon = max(1, round(steps_per_epoch * (cfg.warmup_epochs or cfg.epochs)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(horizon, int(cfg.warmup_ratio * horizon)))
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    metric, higher = primary_metric(data.task)
    patience = cfg.patience if cfg.patience is not None else (8 if data.task == "classification" else 10)
    with StoreReader(cfg.store) as r:
        store_settings = r.settings
        feature_names = {m: r.feature_names(m) for m in r.modalities if m in data.train.feature_dims}
    use_stored_token_ids(cfg.store, store_settings, model._ids, cfg.llm, [data.train, data.valid, data.test], notice)
    view = {"align": cfg.align, "max_len": {m: v for m, v in data.train.max_len.items() if v} or None}
    if data.split.get("made_by") == "msekit train":
        view |= {"split_seed": data.split["seed"], "split_ratios": data.split["ratios"]}
    meta = {"llm_name": cfg.llm, "trust_remote_code": cfg.trust_remote_code, "feature_names": feature_names,
            "store_settings": store_settings, "transform": data.norm_meta(), "view": view,
            "train_config": "../train_config.json"}
    resolved = cfg.to_dict() | {
        "task": data.task, "label_names": data.label_names, "prompt_spec": prompt.to_dict(),
        "world_size": dd.world, "patience_resolved": patience, "scheduler_horizon_steps": horizon,
        "steps_per_epoch": steps_per_epoch, "out_proj_lr_resolved": out_proj_lr, "adapter": acfg.to_dict(), "device": str(device),
        "autocast": str(autocast) if autocast else None, "split": data.split}
    if not resume:
        _init_adapter(model, data, notice)
    average = WeightAverage(adapter, cfg.ema) if cfg.ema else None
    state = initial_state(run_dir, dd, resume, resolved, (adapter, optimizer, scheduler, scaler, average))
    if dd.world > 1:  # only the adapter is wrapped: the frozen LLM needs no gradient sync
        model.adapter = AdapterDDP(adapter, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)
    t = Trainer(cfg=cfg, dd=dd, device=device, run_dir=run_dir, data=data, model=model, adapter=adapter,
                optimizer=optimizer, scheduler=scheduler, scaler=scaler, autocast=autocast, state=state,
                metric=metric, higher=higher, patience=patience, steps_per_epoch=steps_per_epoch, meta=meta,
                log=MetricsLog(run_dir / "metrics.jsonl", dd.main), average=average)
    t.say(f"{trainable_parameters_line((adapter, llm))} | task {data.task} | {len(data.pool)} train samples "
          f"x {dd.world} process(es)" + (f" | resumed at step {state['global_step']}" if resume else ""))
    return t


def param_groups(adapter, weight_decay: float, decay_biases: bool, lr: float = 1e-3,
                 lr_scales: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """AdamW's parameter groups: the adapter's trainable parameters only (never the frozen
    LLM's); with ``decay_biases=False`` the 1-D ones (biases) get no weight decay;
    ``lr_scales`` maps a submodule's name (``"out_proj"``) to a multiplier of ``lr`` for its
    parameters (the schedule scales every group alike).

    Examples:
        >>> groups = param_groups(torch.nn.Linear(3, 2), 0.5, decay_biases=False)
        >>> [(len(g["params"]), g["weight_decay"]) for g in groups]
        [(1, 0.5), (1, 0.0)]
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
        >>> [(len(g["params"]), g["lr"]) for g in param_groups(net, 0.0, True, 0.1, {"1": 0.01})]
        [(2, 0.1), (2, 0.001)]
    """
    scales = lr_scales or {}
    groups: dict[tuple[float, float], list] = {}
    for name, p in adapter.named_parameters():
        if not p.requires_grad:
            continue
        decay = weight_decay if decay_biases or p.dim() >= 2 else 0.0
        scale = next((v for k, v in scales.items() if name == k or name.startswith(k + ".")), 1.0)
        groups.setdefault((decay, scale), []).append(p)
    return [{"params": ps, "weight_decay": decay, "lr": lr * scale} for (decay, scale), ps in groups.items()]


def _init_adapter(model, data: RunData, notice) -> None:
    """The adapter's data-dependent start: the linear path from a probe on the whole training pool
    (``msekit.adapter.probe``), then ``msekit.adapter.init.scaled_init`` on evenly spread samples
    of the pool (the same ones whatever the batch size or the number of processes)."""
    from msekit.adapter.init import INIT_SAMPLES, capture_inputs, embedding_rms, scaled_init
    from msekit.dataset import collate

    adapter, pool = model.adapter, data.pool
    acfg = adapter.config
    if acfg.init != "scaled" and not acfg.has_path:
        return
    rms = embedding_rms(model.llm)
    picks = pool[:: max(1, len(pool) // INIT_SAMPLES)][:INIT_SAMPLES]
    batch = collate([data.train[i] for i in picks])
    inputs = capture_inputs(model, batch)
    if acfg.has_path:
        from msekit.adapter.probe import (
            ENCODER_SHARE,
            fit_path,
            fit_readout,
            scale_path,
            share_encoders,
        )

        info = fit_path(adapter, _pool_means(adapter, data), [data.train.labels[i] for i in pool], data.task)
        kept = adapter.path_proj.weight.detach().clone()
        with torch.no_grad():  # the path adds nothing while the other path is scaled
            adapter.path_proj.weight.zero_()
            adapter.path_proj.bias.zero_()
    if acfg.init == "scaled":
        gains = scaled_init(adapter, inputs, rms)
        notice(f"adapter init: scaled on {len(picks)} training samples (" + ", ".join(
            f"{k} x{v:.3g}" for k, v in gains.items() if k != "token_spread") + ")")
    if acfg.has_path:
        with torch.no_grad():
            adapter.path_proj.weight.copy_(kept)
        gain = scale_path(adapter, inputs, rms) if acfg.init == "scaled" else 1.0
        notice(f"adapter init: linear path from a probe on {len(pool)} training samples ("
               + ", ".join(f"{k} {v:.3g}" for k, v in info.items()) + f", projection x{gain:.3g})")
        share_encoders(adapter)
        before, after = fit_readout(model, batch, rms)
        notice(f"adapter init: encoders' projection x{ENCODER_SHARE}; the path's read-out fitted on "
               f"{len(picks)} training samples (loss {before:.3g} -> {after:.3g})")


def _pool_means(adapter, data: RunData, batch_size: int = 64):
    """(N, Da + Dv) utterance means of the training pool, as the adapter computes them."""
    import numpy as np
    from torch.utils.data import DataLoader

    from msekit.adapter.probe import batch_means
    from msekit.dataset import collate

    rows = []
    for batch in DataLoader(data.train, batch_size=batch_size, sampler=data.pool, collate_fn=collate):
        with torch.no_grad():
            m = batch_means(adapter, batch, len(batch["ids"]))  # (B, Da + Dv)
        rows.append(m.float().cpu().numpy())
    return np.concatenate(rows)


def load_frozen_llm(cfg: TrainConfig, device: torch.device | None = None):
    """The run's frozen LLM and tokenizer, on its device, in its precision."""
    from msekit.llm import load_llm

    check_device(cfg.device)
    if device is None:
        device = torch.device(cfg.device) if cfg.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast, _ = _precision(cfg, device)
    return load_llm(cfg.llm, trust_remote_code=cfg.trust_remote_code, device=device, dtype=autocast or torch.float32)


# ----------------------------------------------------------------------------- 2. one epoch
def train_epoch(t: Trainer) -> bool:
    """Trains the rest of the current epoch; False when ``stop_after`` interrupted it."""
    from torch.utils.data import DataLoader

    from msekit.dataset import collate

    cfg, dd, state = t.cfg, t.dd, t.state
    epoch = state["epoch"]
    t.model.train()
    if cfg.grad_checkpointing:
        _enable_grad_checkpointing(t.model.llm)
    order = epoch_indices(t.data.pool, cfg.seed, epoch, dd.rank, dd.world)
    micro = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    first = state["micro_in_epoch"]  # a whole number of optimizer steps into the epoch
    # One loader for the epoch; its own generator keeps the global RNG stream untouched.
    loader = DataLoader(t.data.train, batch_sampler=micro[first:], collate_fn=collate, num_workers=cfg.num_workers,
                        generator=torch.Generator().manual_seed(cfg.seed + epoch))
    bar = TrainBar(dd.main and cfg.progress, t.steps_per_epoch)
    bar.start(epoch, first // cfg.grad_accum)
    total_loss, k = 0.0, first
    for batch in loader:
        g0 = (k // cfg.grad_accum) * cfg.grad_accum
        size = min(cfg.grad_accum, len(micro) - g0)  # micro-batches in this optimizer step
        last = k + 1 == g0 + size
        sync = nullcontext() if (last or dd.world == 1) else t.model.adapter.no_sync()
        with sync:
            if cfg.input_noise:
                batch = add_input_noise(batch, cfg.input_noise, noise_generator(cfg.seed, epoch, k, dd.rank))
            with _autocast(t.device, t.autocast):
                loss = t.model(batch) / size  # mean over the step's micro-batches
            t.scaler.scale(loss).backward()
        total_loss += loss.item()
        k += 1
        if last:
            lr = _optimizer_step(t)
            if t.average is not None:
                t.average.update(t.adapter)
            state["global_step"] += 1
            state["micro_in_epoch"] = k
            if dd.world > 1:
                total_loss = sum(dd.gather(total_loss)) / dd.world
            bar.advance(total_loss)
            step = state["global_step"]
            if step % cfg.log_every == 0:
                t.log.write({"kind": "train", "epoch": epoch, "step": step, "loss": total_loss, "lr": lr})
            total_loss = 0.0
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and k < len(micro):
                _checkpoint(t)
            if cfg.stop_after is not None and step >= cfg.stop_after:
                t.interrupted = True  # as if killed here: nothing more is written
                break
    bar.stop()
    return not t.interrupted


def _optimizer_step(t: Trainer) -> float:
    """Clips, steps the optimizer and the schedule; returns the learning rate this step used."""
    if t.cfg.max_grad_norm:
        t.scaler.unscale_(t.optimizer)
        torch.nn.utils.clip_grad_norm_(t.adapter.parameters(), t.cfg.max_grad_norm)
    lr = t.scheduler.get_last_lr()[0]
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        # fp16: the GradScaler skips a step whose gradients overflowed (the first ones, while it
        # finds its scale); the schedule still follows the step count.
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`")
        t.scheduler.step()
    return lr


# ----------------------------------------------------------------------------- 3. validation
def is_improvement(value: float, loss: float, best: float | None, best_loss: float | None,
                   higher: bool, margin: float = 0.0) -> bool:
    """Whether a validation result beats the best so far: a better metric, or an equal metric
    with a lower validation loss; with ``margin`` > 0, a metric better by more than ``margin``
    (no tie-break: the warm start of the linear path, see :func:`validate_start`).

    The tie-break matters for classes: an untrained adapter answers the majority class, and
    weighted F1 stays exactly there for several epochs while the label loss falls; counting those
    epochs as "no improvement" let patience run out before the adapter had a chance to leave the
    plateau, and kept the first (least trained) of equal checkpoints.

    Examples:
        >>> is_improvement(0.47, 3.9, 0.47, 6.0, higher=True), is_improvement(0.47, 6.1, 0.47, 6.0, True)
        (True, False)
        >>> is_improvement(0.50, 9.0, 0.47, 1.0, True), is_improvement(0.60, 0.1, 0.55, 0.2, higher=False)
        (True, False)
        >>> is_improvement(0.60, 0.1, 0.55, 0.2, True, margin=0.05), is_improvement(0.61, 0.1, 0.55, 0.2, True, 0.05)
        (False, True)
    """
    if best is None:
        return True
    if margin > 0:
        return value > best + margin if higher else value < best - margin
    if value != best:
        return value > best if higher else value < best
    return best_loss is not None and loss < best_loss


def still_learning(loss: float, min_loss: float | None) -> bool:
    """Whether the validation loss reached a new minimum: such an epoch does not count towards
    early stopping even when the metric did not improve.

    On small sets the metric of the first epochs is noise (a lucky F1 on 13 clips at epoch 1),
    while the label loss is still falling fast; stopping on the metric alone then ended runs
    before the adapter had learned anything. The best adapter is still the one with the best
    metric (:func:`is_improvement`).

    Examples:
        >>> still_learning(2.5, 3.0), still_learning(3.1, 3.0), still_learning(9.0, None)
        (True, False, True)
        >>> still_learning(float("nan"), 3.0)  # no validation loss (--no-val-loss): the metric alone
        False
    """
    if loss != loss:
        return False
    return min_loss is None or loss < min_loss


def validate_and_checkpoint(t: Trainer) -> bool:
    """Validates, keeps the best adapter, checkpoints; True when early stopping ends the run."""
    state, epoch = t.state, t.state["epoch"]
    with t.average.applied(t.adapter) if t.average is not None else nullcontext():  # --ema: the average
        m, vloss, _ = evaluate_split(t, t.data.valid)
        value = m.get(t.metric)
        keep_last = t.cfg.keep == "last"  # every epoch replaces the kept adapter; no early stopping
        margin = (state.get("start_margin") or 0.0) if state.get("best_epoch") == -1 else 0.0  # the warm start's
        improved = keep_last or is_improvement(value, vloss, state["best"], state.get("best_loss"), t.higher, margin)
        learning = still_learning(vloss, state.get("min_loss"))
        if learning:
            state["min_loss"] = vloss
        if improved:
            state["best"], state["best_epoch"] = value, epoch
            state["best_loss"] = vloss
            if t.dd.main:
                _save_best(t, {"best_epoch": epoch, t.metric: value})
    state["bad_epochs"] = 0 if (improved or learning) else state["bad_epochs"] + 1
    _log_valid(t, epoch, m, vloss, improved)
    t.say(f"epoch {epoch}: valid loss {vloss:.4f} {t.metric} {value:.4f}"
          + ((" (kept)" if keep_last else " (best)") if improved
             else f" (best {state['best']:.4f} at epoch {state['best_epoch']})"))
    state["epoch"], state["micro_in_epoch"] = epoch + 1, 0
    t.stopped_early = not keep_last and state["bad_epochs"] >= t.patience
    state["finished"] = t.stopped_early or state["epoch"] >= t.cfg.epochs
    _checkpoint(t)
    if t.stopped_early:
        t.say(f"early stop: no {t.metric} improvement and no lower validation loss for {t.patience} epochs")
    return t.stopped_early


def validate_start(t: Trainer) -> None:
    """Validates the adapter before its first step and keeps it as the best so far (epoch -1).

    With the linear path the starting adapter is the probe read out by the frozen LLM; training
    has to beat it on validation to replace it, so a run that only loses what the warm start had
    ends with the warm start. Beating it means more than ``start_margin`` bootstrap standard
    errors of the start's own validation metric (the one-standard-error rule of model selection:
    keep the simpler model unless the other is better by more than the noise of the estimate);
    on 15 validation clips one clip is below that noise, and epochs that won by one clip scored
    the same or lower on test (README). A checkpoint records the start and its margin, so a
    resumed run does not repeat it.
    """
    from msekit.metrics import bootstrap_se

    state = t.state
    m, vloss, pred = evaluate_split(t, t.data.valid)
    value = m.get(t.metric)
    state["best"], state["best_epoch"], state["best_loss"] = value, -1, vloss
    state["min_loss"] = vloss if vloss == vloss else None  # NaN: no validation loss (--no-val-loss)
    state["start_margin"] = t.cfg.start_margin * bootstrap_se(pred, t.metric, seed=t.cfg.seed)
    if t.dd.main:
        _save_best(t, {"best_epoch": -1, t.metric: value})
    _log_valid(t, -1, m | {"start_margin": state["start_margin"]}, vloss, True)
    bar = value + (1 if t.higher else -1) * state["start_margin"]
    tie = "" if state["start_margin"] > 0 else ", or equal with a lower valid loss"  # as is_improvement decides
    t.say(f"start (the warm start, before any step): valid loss {vloss:.4f} {t.metric} {value:.4f} (best; an "
          f"epoch replaces it when {'above' if t.higher else 'below'} {bar:.4f}{tie})")
    _checkpoint(t)


def _log_valid(t: Trainer, epoch: int, m: dict[str, Any], vloss: float, best: bool) -> None:
    """One ``valid`` row of metrics.jsonl: the numeric metrics, the loss and whether it is the best."""
    t.log.write({"kind": "valid", "epoch": epoch, "step": t.state["global_step"], "loss": vloss,
                 **{k: v for k, v in m.items() if isinstance(v, int | float)}, "best": best})


def _checkpoint(t: Trainer) -> None:
    """The run's state for --resume (main process only)."""
    if t.dd.main:
        save_checkpoint(t.run_dir / CHECKPOINT_DIR, t.adapter, t.optimizer, t.scheduler, t.scaler, _public(t.state),
                        t.average)


def evaluate_split(t: Trainer, ds) -> tuple[dict[str, Any], float, Predictions]:
    """Metrics, mean label loss and predictions of a split; sharded over ranks, gathered."""
    cfg, dd = t.cfg, t.dd
    bs = cfg.eval_batch_size or 2 * cfg.batch_size
    shard = list(range(len(ds)))[dd.rank::dd.world]
    pred = predict_dataset(t.model, ds, shard, batch_size=bs, decode=cfg.val_decode)
    loss_sum, count = _label_loss(t, ds, shard, bs) if cfg.val_loss else (math.nan, 0)
    parts = dd.gather((pred, loss_sum, count))
    pred = concat_predictions([p[0] for p in parts])
    loss = sum(p[1] for p in parts) / max(1, sum(p[2] for p in parts)) if cfg.val_loss else math.nan
    return compute_metrics(pred), loss, pred


@torch.no_grad()
def _label_loss(t: Trainer, ds, indices: list[int], batch_size: int) -> tuple[float, int]:
    """Summed per-batch mean loss x batch size, and the sample count (for a mean loss)."""
    from torch.utils.data import DataLoader

    from msekit.dataset import collate

    was = t.model.training
    t.model.eval()
    total, n = 0.0, 0
    labelled = [i for i in indices if ds.labels[i] is not None]
    for batch in DataLoader(ds, batch_size=batch_size, sampler=labelled, collate_fn=collate):
        with _autocast(t.device, t.autocast):
            loss = t.model(batch)
        total += float(loss) * len(batch["ids"])
        n += len(batch["ids"])
    t.model.train(was)
    return total, n


def _save_best(t: Trainer, extra: dict[str, Any]) -> None:
    wrapped, t.model.adapter = t.model.adapter, t.adapter  # save the bare adapter, not DDP's wrapper
    try:
        t.model.save_adapter(t.run_dir / ADAPTER_DIR, t.meta | extra)
    finally:
        t.model.adapter = wrapped


# ----------------------------------------------------------------------------- 4. finish
def finish(t: Trainer) -> TrainResult:
    """Scores the best adapter on valid and test, writes final_metrics.json and the report."""
    state = t.state
    t.model.adapter = t.adapter
    result = TrainResult(run_dir=t.run_dir, best_epoch=state["best_epoch"], best_metric=state["best"],
                         metric=t.metric, epochs_run=state["epoch"], global_step=state["global_step"],
                         stopped_early=t.stopped_early, interrupted=t.interrupted, model=t.model)
    if t.interrupted:
        return result
    t.dd.barrier()  # rank 0 has written the best adapter
    from safetensors.torch import load_file

    t.adapter.load_state_dict(load_file(str(t.run_dir / ADAPTER_DIR / "adapter_model.safetensors")))
    preds = {}
    for name, ds in t.data.evals().items():
        m, loss, preds[name] = evaluate_split(t, ds)
        result.final[name] = m | {"loss": loss}
    if not t.dd.main:
        return result
    baseline = _baseline(t)
    final = {"best_epoch": state["best_epoch"], "metric": t.metric, "best_valid": state["best"],
             "epochs_run": state["epoch"], "global_step": state["global_step"], "stopped_early": t.stopped_early,
             "seconds": round(time.time() - t.t_start, 1),
             "splits": {k: json_metrics(v) for k, v in result.final.items()}}
    if baseline:
        final["baseline"] = baseline
    text = json.dumps(finite_json(final), indent=2, allow_nan=False)
    (t.run_dir / "final_metrics.json").write_text(text + "\n")
    if t.cfg.report:
        from msekit.report import write_run_report

        write_run_report(t.run_dir, result.final, preds["test" if "test" in preds else "valid"], t.metric,
                         t.model.prompt.value_range, print_table=t.cfg.progress, baseline=baseline)
    return result


def _baseline(t: Trainer) -> dict[str, Any] | None:
    """The linear probe on the same splits (``msekit.baseline``), or None when switched off."""
    if not t.cfg.baseline:
        return None
    from msekit.baseline import linear_probe

    return linear_probe(t.data.train, t.data.evals(), t.data.pool)


# ----------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    """LR factor per optimizer step: linear warm-up, then half a cosine to 0 at ``total_steps``
    (held at 0 after), as transformers' get_cosine_schedule_with_warmup within the horizon."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _precision(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler)."""
    if device.type != "cuda" or cfg.precision == "fp32":
        return None, False
    if cfg.precision == "auto":
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    return (torch.bfloat16, False) if cfg.precision == "bf16" else (torch.float16, True)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _enable_grad_checkpointing(llm) -> None:
    """Gradient checkpointing on a frozen LLM: HF only checkpoints layers in training mode, so
    the decoder layers (not their children: dropout stays off) are flagged as training."""
    llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for m in llm.modules():
        if getattr(m, "gradient_checkpointing", False):
            m.training = True


def _public(state: dict[str, Any]) -> dict[str, Any]:
    return {k: state.get(k) for k in ("global_step", "best", "best_epoch", "best_loss", "min_loss", "bad_epochs",
                                      "finished", "epoch", "micro_in_epoch", "start_margin")}
