"""Training the MSE-Adapter on a frozen LLM (``msekit train``).

Modules, in the order a run uses them: ``config`` (TrainConfig with its nested AdapterConfig,
presets), ``data`` (the splits as datasets, one normalization), ``distributed``, ``loop`` (the
trainer: set-up, epoch, validate + checkpoint, finish), ``checkpoint``, ``monitor`` (log and
progress bar), ``seeds`` (multi-seed runs and their summary).

Run folder (``--out``)::

    train_config.json    the fully resolved TrainConfig (+ task, labels, prompt, split, world size)
    adapter/             the best adapter (adapter_config.json + adapter_model.safetensors)
    checkpoint/          the last state for --resume: adapter + optimizer tensors and RNG
                         states in safetensors, everything else in trainer_state.json (no pickle)
    metrics.jsonl        one JSON object per logged step ("train") and per epoch ("valid")
    final_metrics.json, report.md, loss_curves.png, confusion_matrix.png | scatter.png

A multi-seed run (``seeds``) holds one such folder per seed, ``seed-<s>/``, and ``summary.json``
+ ``summary.md`` (mean +- std over the seeds).

Distributed: under ``torchrun`` / ``accelerate launch`` (WORLD_SIZE > 1); ``batch_size`` is per
process: the global batch is batch_size x grad_accum x world size.
"""

from msekit.train.checkpoint import load_checkpoint, save_checkpoint
from msekit.train.config import (
    PAPER_SEEDS,
    PRECISIONS,
    TrainConfig,
    load_presets,
    parse_seeds,
    presets_path,
    reference_results,
    resolve_config,
)
from msekit.train.distributed import epoch_indices
from msekit.train.loop import ADAPTER_DIR, CHECKPOINT_DIR, TrainResult, cosine_with_warmup, train
from msekit.train.seeds import SeedsResult, train_seeds

__all__ = [
    "ADAPTER_DIR", "CHECKPOINT_DIR", "PAPER_SEEDS", "PRECISIONS", "SeedsResult", "TrainConfig", "TrainResult",
    "cosine_with_warmup", "epoch_indices", "load_checkpoint", "load_presets", "parse_seeds", "presets_path",
    "reference_results", "resolve_config", "save_checkpoint", "train", "train_seeds",
]


from msekit import callable_module  # noqa: E402

callable_module(__name__)  # msekit.train(cfg) calls train(cfg)
