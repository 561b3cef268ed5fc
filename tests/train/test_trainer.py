"""The trainer on a tiny random LLM and a tiny synthetic store: resume, DDP, presets, files."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from msekit.errors import MsekitError
from msekit.train import cosine_with_warmup, epoch_indices, resolve_config, train
from tests.train.helpers import make_store, tiny_llm


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("tiny") / "tiny.h5", n_per_split=(8, 4, 4))


def _run(store: Path, out: Path, **kw):
    llm, tok = tiny_llm()
    opts = dict(store=str(store), out=str(out), epochs=2, batch_size=2, lr=1e-2, progress=False,
                report=False) | kw
    return train(resolve_config(**opts), llm=llm, tokenizer=tok)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("extra", [{}, {"input_noise": 0.5}, {"ema": 0.8}], ids=["plain", "input-noise", "ema"])
def test_resume_after_interruption_matches_uninterrupted_run(store, tmp_path, extra):
    full = _run(store, tmp_path / "full", **extra)
    part = _run(store, tmp_path / "part", checkpoint_every=2, stop_after=7, **extra)  # "killed" at 7
    assert part.interrupted and part.global_step == 7
    state = json.loads((tmp_path / "part/checkpoint/trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["epoch"] == 1  # last checkpoint: mid-epoch 1
    resumed = _run(store, tmp_path / "part", checkpoint_every=2, **extra)  # automatic resume
    assert resumed.global_step == full.global_step == 8
    names = ["adapter/adapter_model.safetensors", "checkpoint/adapter_model.safetensors"]
    assert (tmp_path / "full/checkpoint/average.safetensors").exists() == ("ema" in extra)
    for name in names + (["checkpoint/average.safetensors"] if "ema" in extra else []):
        assert _max_diff(load_file(tmp_path / "full" / name), load_file(tmp_path / "part" / name)) == 0.0
    steps = [r["step"] for r in map(json.loads, (tmp_path / "part/metrics.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    assert steps == list(range(1, 9))  # the log was cut back to the checkpoint, no duplicates


def test_run_folder_holds_adapter_only_and_no_pickle(store, tmp_path):
    _run(store, tmp_path / "r", epochs=1)
    files = sorted(p.relative_to(tmp_path / "r").as_posix() for p in (tmp_path / "r").rglob("*") if p.is_file())
    assert "adapter/adapter_model.safetensors" in files and "train_config.json" in files
    assert not [f for f in files if f.endswith((".pt", ".pth", ".bin", ".pkl"))]
    # no file holds a pickle of any protocol (0-1 text opcodes, 2+ b"\x80<proto>") or a torch.save zip
    for f in files:
        head = (tmp_path / "r" / f).read_bytes()[:4]
        assert not (head[:1] == b"\x80" and 2 <= head[1] <= 5) and head != b"PK\x03\x04", f
        assert f.endswith((".json", ".jsonl", ".safetensors", ".md", ".png")), f
    weights = load_file(tmp_path / "r/adapter/adapter_model.safetensors")
    assert not [k for k in weights if "embed_tokens" in k or "layers." in k]  # no LLM weights
    assert sum(v.numel() for v in weights.values()) < 1_000_000
    cfg = json.loads((tmp_path / "r/train_config.json").read_text())
    assert cfg["task"] == "classification" and cfg["label_names"] == ["neg", "pos"]
    assert cfg["adam_eps"] == 1e-4
    with pytest.raises(MsekitError, match="already holds"):  # finished run, no silent overwrite
        _run(store, tmp_path / "r", epochs=1, resume=False)


def test_presets_and_overrides():
    cfg = resolve_config("mosei-llama2-7b", lr=1e-3)
    assert (cfg.batch_size, cfg.lr, cfg.warmup_epochs, cfg.patience) == (8, 1e-3, 30, 10)
    assert (cfg.adapter.audio_hidden, cfg.adapter.video_hidden, cfg.adam_eps, cfg.llm) == (64, 32, 1e-4, "llama2-7b")
    assert resolve_config("meld-qwen-1.8b").adapter.num_pseudo_tokens == 2
    assert resolve_config("cherma-chatglm3-6b-base").trust_remote_code
    with pytest.raises(MsekitError, match="preset must be one of"):
        resolve_config("mosei-gpt5")
    with pytest.raises(MsekitError, match="unknown training option"):
        resolve_config(learning_rate=1)


def test_schedule_and_sampler():
    f = cosine_with_warmup(100, 10)
    assert f(0) == 0.0 and f(5) == 0.5 and f(10) == 1.0 and abs(f(55) - 0.5) < 1e-9 and f(100) == 0.0
    assert f(150) == 0.0  # held at 0 past the horizon, never rising again
    pool = list(range(10))
    one = epoch_indices(pool, 7, 3)
    two = [epoch_indices(pool, 7, 3, r, 2) for r in range(2)]
    # consecutive micro-batches of 2 ranks = consecutive batches of one process, batch x 2
    assert sorted(two[0][:2] + two[1][:2]) == sorted(one[:4])
    assert epoch_indices(pool, 7, 4) != one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, store: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from safetensors.torch import save_file

    try:
        res = _run(Path(store), Path(out), batch_size=2)
        adapter = getattr(res.model.adapter, "module", res.model.adapter)
        save_file({k: v.contiguous() for k, v in adapter.state_dict().items()},
                  str(Path(out).parent / f"rank{rank}.safetensors"))
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def test_ddp_two_cpu_processes_match_single_process(store, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(store), str(tmp_path / "ddp" / "run")), nprocs=2)
    r0, r1 = load_file(tmp_path / "ddp/rank0.safetensors"), load_file(tmp_path / "ddp/rank1.safetensors")
    assert _max_diff(r0, r1) == 0.0  # DDP keeps the replicas identical
    single = _run(store, tmp_path / "single", batch_size=4)  # the same global batch in one process
    assert single.global_step == 4
    ddp_last = load_file(tmp_path / "ddp/run/checkpoint/adapter_model.safetensors")
    one_last = load_file(tmp_path / "single/checkpoint/adapter_model.safetensors")
    assert _max_diff(ddp_last, one_last) < 1e-4
    assert _max_diff(r0, load_file(tmp_path / "single/adapter/adapter_model.safetensors")) < 1e-4
    assert not (tmp_path / "ddp/rank1").exists()  # only rank 0 writes the run folder


def test_class_loss_changes_training_and_is_recorded(store, tmp_path):
    plain = _run(store, tmp_path / "plain", epochs=1, baseline=False)
    mixed = _run(store, tmp_path / "mixed", epochs=1, baseline=False, class_loss=1.0)
    assert plain.global_step == mixed.global_step
    a = load_file(tmp_path / "plain/adapter/adapter_model.safetensors")
    b = load_file(tmp_path / "mixed/adapter/adapter_model.safetensors")
    assert _max_diff(a, b) > 0
    assert json.loads((tmp_path / "mixed/train_config.json").read_text())["class_loss"] == 1.0
    with pytest.raises(MsekitError, match="class_loss"):
        resolve_config(class_loss=-1)


@pytest.mark.parametrize("decay_biases", [True, False])
def test_bias_weight_decay_follows_the_option(store, tmp_path, decay_biases):
    from msekit.train.loop import setup

    llm, tok = tiny_llm()
    t = setup(resolve_config(store=str(store), out=str(tmp_path / "r"), weight_decay=0.5, decay_biases=decay_biases,
                             progress=False, report=False), llm, tok)
    decay = {id(p): g["weight_decay"] for g in t.optimizer.param_groups for p in g["params"]}
    params = dict(t.adapter.named_parameters())
    assert set(decay) == {id(p) for p in params.values()}  # every adapter parameter, once
    assert decay[id(params["out_proj.bias"])] == (0.5 if decay_biases else 0.0)
    assert decay[id(params["audio_encoder.lstm.bias_ih_l0"])] == (0.5 if decay_biases else 0.0)
    assert decay[id(params["out_proj.weight"])] == 0.5
