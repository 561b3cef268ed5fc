"""Prediction throughput of the two decoding modes and how often they agree.

  score     classes: likelihood of every label string, one batched forward pass;
            regression: greedy decoding constrained to number tokens
  generate  the authors' free greedy generation, parsed afterwards (unparsable answers counted)

With ``--run RUN --store STORE`` it predicts a split of a real store with a trained run;
without, an untrained adapter on synthetic MOSEI-shaped samples (transcripts of 10 to 50
words, audio 500 x 74, video 375 x 35; throughput only: agreement of an untrained adapter means
little). ``--batch-sizes 1,4,8,16,32`` instead times score mode at each batch size, the sizes
interleaved round by round, to pick ``predict --batch-size``.

    .venv/bin/python bench/bench_predict.py --run runs/demo --store runs/demo-feats.h5 --split test
    .venv/bin/python bench/bench_predict.py --llm llama2-7b --device cuda --task regression
    .venv/bin/python bench/bench_predict.py --task regression --n 64 --batch-sizes 1,4,8,16,32,64
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def _synthetic(task: str, n: int, seed: int = 0):
    """A StoreDataset-like list of batches' items: text + MOSEI-shaped audio/video."""
    g = torch.Generator().manual_seed(seed)
    words = "i really liked this but some parts were slow and the sound was bad".split()
    lengths = torch.randint(10, 51, (n,), generator=g).tolist()  # words per transcript

    class DS(torch.utils.data.Dataset):
        labels = [None] * n

        def __len__(self):
            return n

        def __getitem__(self, i):
            gi = torch.Generator().manual_seed(seed * 100003 + i)
            return {"id": f"s{i}", "text": " ".join(words[(i + k) % len(words)] for k in range(lengths[i])),
                    "audio": torch.randn(500, 74, generator=gi).numpy(),
                    "video": torch.randn(375, 35, generator=gi).numpy(), "label": None}

    return DS()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm", default="smollm2-135m")
    p.add_argument("--device", default=None)
    p.add_argument("--run", default=None, help="a trained run folder")
    p.add_argument("--store", default=None, help="a store to predict (with --run)")
    p.add_argument("--split", default="test")
    p.add_argument("--task", default="classification", help="synthetic mode: classification | regression")
    p.add_argument("--n", type=int, default=32, help="synthetic mode: samples")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-sizes", default=None, help="e.g. 1,4,8,16,32: time score mode at each")
    p.add_argument("--rounds", type=int, default=2, help="with --batch-sizes: rounds over the sizes")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from msekit.inference import predict_dataset
    from msekit.predict import load_run

    t0 = time.perf_counter()
    if args.run:
        from msekit.dataset import StoreDataset

        run = load_run(args.run, device=args.device)
        model = run.model
        ds = StoreDataset(args.store, args.split, run.view())
    else:
        from msekit.adapter import AdapterConfig, MSEAdapter
        from msekit.llm import llm_hidden_size, load_llm
        from msekit.mllm import MultimodalLLM
        from msekit.prompts import get_prompt

        llm, tok = load_llm(args.llm, device=args.device)
        torch.manual_seed(0)
        adapter = MSEAdapter(AdapterConfig(llm_hidden_size=llm_hidden_size(llm), audio_dim=74, video_dim=35))
        prompt = get_prompt("mosei") if args.task == "regression" else get_prompt("meld")
        model = MultimodalLLM(llm, tok, adapter, prompt, base_llm=args.llm)
        ds = _synthetic(args.task, args.n)
    load_s = time.perf_counter() - t0

    if args.batch_sizes:
        return _sweep(model, ds, [int(b) for b in args.batch_sizes.split(",")], args.rounds)
    res: dict = {"llm": args.run and model.base_llm or args.llm, "device": str(model.device),
                 "task": model.prompt.task, "n": len(ds), "batch": args.batch_size, "load_s": round(load_s, 1),
                 "threads": torch.get_num_threads()}
    preds = {}
    predict_dataset(model, ds, list(range(min(len(ds), args.batch_size))), batch_size=args.batch_size)  # warm-up
    for mode in ("score", "generate"):
        t = time.perf_counter()
        preds[mode] = predict_dataset(model, ds, batch_size=args.batch_size, decode=mode)
        wall = time.perf_counter() - t
        res[f"{mode}_samples_per_s"] = round(len(ds) / wall, 2)
        res[f"{mode}_unparsed"] = preds[mode].n_unparsed
    s, g = preds["score"], preds["generate"]
    both = s.parsed & g.parsed
    if model.prompt.task == "classification":
        res["agreement"] = round(float(np.mean(s.values[both] == g.values[both])) if both.any() else float("nan"), 3)
    else:
        res["mean_abs_diff"] = round(float(np.mean(np.abs(s.values[both] - g.values[both]))) if both.any() else float("nan"), 3)
    if s.labels is not None and model.prompt.task == "classification" and (s.labels >= 0).any():
        for mode, pr in preds.items():
            ok = pr.labels >= 0
            res[f"{mode}_accuracy"] = round(float(np.mean(pr.values[ok] == pr.labels[ok])), 3)
    print(" | ".join(f"{k} {v}" for k, v in res.items()))
    print(json.dumps(res))
    return res


def _sweep(model, ds, sizes: list[int], rounds: int) -> dict:
    """Score-mode samples per second at each batch size (median over ``rounds`` interleaved rounds)."""
    from msekit.inference import predict_dataset

    predict_dataset(model, ds, list(range(min(len(ds), 4))), batch_size=4)  # warm-up
    times: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(rounds):
        for b in sizes:
            t = time.perf_counter()
            predict_dataset(model, ds, batch_size=b)
            times[b].append(time.perf_counter() - t)
    res = {"task": model.prompt.task, "n": len(ds), "threads": torch.get_num_threads(),
           "samples_per_s": {b: round(len(ds) / float(np.median(v)), 2) for b, v in times.items()}}
    print(" | ".join(f"batch {b}: {v} samples/s" for b, v in res["samples_per_s"].items()))
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
