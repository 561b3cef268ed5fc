"""The resumable training state: ``checkpoint/`` in the run folder, written atomically, and the
run folder itself (fresh, overwritten or resumed).

Tensors (adapter weights, optimizer moments, torch RNG states) are safetensors files;
everything else (step counters, best metric, schedule, scaler, Python and NumPy RNG states)
is ``trainer_state.json``. No pickle is ever written or read.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from msekit.errors import MsekitError
from msekit.train.averaging import AVERAGE_FILE
from msekit.train.config import RESUME_FREE, TrainConfig

if TYPE_CHECKING:
    from msekit.train.distributed import Distributed

CHECKPOINT_DIR = "checkpoint"
STATE_NAME = "trainer_state.json"
ADAPTER_DIR = "adapter"
RUN_FILES = (CHECKPOINT_DIR, ADAPTER_DIR, "metrics.jsonl", "train_config.json", "final_metrics.json")


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


def save_checkpoint(folder: Path, adapter, optimizer, scheduler, scaler, state: dict[str, Any],
                    average=None) -> None:
    """Writes the resumable state atomically (a complete new folder replaces the old one);
    ``average`` is the run's :class:`~msekit.train.averaging.WeightAverage` (``--ema``) or None."""
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
    if average is not None:
        save_file(average.state_dict(), str(tmp / AVERAGE_FILE))
    doc = dict(state)
    doc["optimizer"] = {"param_groups": opt["param_groups"], "scalars": scalars}
    doc["scheduler"] = scheduler.state_dict()
    doc["scaler"] = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
    doc["rng"] = _json_rng()
    (tmp / STATE_NAME).write_text(json.dumps(doc, indent=2, default=float) + "\n")
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def load_checkpoint(folder: Path, adapter, optimizer, scheduler, scaler, average=None) -> dict[str, Any]:
    """Restores what :func:`save_checkpoint` wrote; returns the trainer state.

    Raises:
        MsekitError: a truncated or corrupt checkpoint file (named), with the way out.
    """
    from safetensors import SafetensorError

    path = folder / STATE_NAME
    try:
        return _load(folder, adapter, optimizer, scheduler, scaler, average)
    except MsekitError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, IndexError, SafetensorError) as e:
        bad = getattr(e, "filename", None) or _first_unreadable(folder) or path
        raise MsekitError(f"{bad}: the training checkpoint is truncated or corrupt "
                          f"({type(e).__name__}); rerun with --no-resume (or --overwrite) to start over") from None


def _first_unreadable(folder: Path) -> Path | None:
    """The first checkpoint file that does not read back, to name it in the error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        json.loads((folder / STATE_NAME).read_text())
    except (OSError, ValueError):
        return folder / STATE_NAME
    for name in ("adapter_model.safetensors", "optimizer.safetensors", "rng_state.safetensors", AVERAGE_FILE):
        if name == AVERAGE_FILE and not (folder / name).exists():
            continue
        try:
            load_file(str(folder / name))
        except (OSError, ValueError, SafetensorError):
            return folder / name
    return None


def _load(folder: Path, adapter, optimizer, scheduler, scaler, average=None) -> dict[str, Any]:
    from safetensors.torch import load_file

    doc = json.loads((folder / STATE_NAME).read_text())
    adapter.load_state_dict(load_file(str(folder / "adapter_model.safetensors")))
    if average is not None:
        average.load_state_dict(load_file(str(folder / AVERAGE_FILE)))
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


def check_resume(run_dir: Path, resolved: dict[str, Any]) -> None:
    """Refuses to resume a run with settings that would change its result."""
    path = run_dir / "train_config.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    new = json.loads(json.dumps(resolved, default=str))
    diff = sorted(k for k in set(old) | set(new) if k not in RESUME_FREE and old.get(k) != new.get(k))
    if diff:
        raise MsekitError(f"{run_dir}: cannot resume with other settings ({', '.join(diff)} differ); "
                          "use the same options, --overwrite or another --out")


def truncate_log(path: Path, step: int) -> None:
    """Drops log lines written after the checkpoint (they will be written again)."""
    if not path.is_file():
        return
    from msekit.report import read_metrics_log

    keep = [r for r in read_metrics_log(path)
            if r.get("step", 0) < step or (r.get("step", 0) == step and r.get("kind") == "train")
            or (r.get("kind") == "valid" and r.get("step", 0) <= step)]
    path.write_text("".join(json.dumps(r) + "\n" for r in keep))


def prepare_run_dir(cfg: TrainConfig, dd: Distributed, run_dir: Path) -> bool:
    """Clears the folder for --overwrite; returns whether the run resumes from its checkpoint."""
    has_ckpt = (run_dir / CHECKPOINT_DIR / STATE_NAME).is_file() and not cfg.overwrite
    if cfg.overwrite and dd.main and run_dir.exists():
        for name in RUN_FILES:
            p = run_dir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    dd.barrier()
    resume = has_ckpt if cfg.resume is None else cfg.resume
    if cfg.resume and not has_ckpt:
        raise MsekitError(f"--resume: {run_dir / CHECKPOINT_DIR} holds no checkpoint to resume from")
    if not resume and (run_dir / "train_config.json").is_file():
        raise MsekitError(f"{run_dir} already holds a run; use --resume, --overwrite or another --out")
    return resume


def initial_state(run_dir: Path, dd: Distributed, resume: bool, resolved: dict[str, Any],
                  parts: tuple) -> dict[str, Any]:
    """The loop's counters: from the run's checkpoint (which also restores ``parts``: adapter,
    optimizer, scheduler, scaler and the weight average or None), or fresh, with
    ``train_config.json`` written."""
    state = {"epoch": 0, "micro_in_epoch": 0, "global_step": 0, "best": None, "best_epoch": -1,
             "best_loss": None, "min_loss": None, "bad_epochs": 0, "finished": False}
    if resume:
        check_resume(run_dir, resolved)
        state.update(load_checkpoint(run_dir / CHECKPOINT_DIR, *parts))
        if state.get("finished"):
            raise MsekitError(f"{run_dir} holds a finished run; use --overwrite or another --out")
        if dd.main:
            truncate_log(run_dir / "metrics.jsonl", state["global_step"])
    elif dd.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.json").write_text(json.dumps(resolved, indent=2, default=str) + "\n")
    return state
