"""Training-step cost of the MSE-Adapter on a frozen LLM vs the frozen LLM alone.

Compares, on one MOSEI-shaped synthetic batch (text ~50 tokens, audio 500 x 74, video 375 x 35):

  adapter step   adapter forward + LLM forward/backward + adapter backward + AdamW step
  LLM alone      LLM forward + backward on the same input embeddings (same tokens, same
                 label-token loss), gradient taken w.r.t. the embeddings

and reports the median step time of each, the overhead ratio (target <= 1.10) and peak memory
(RSS on CPU, max allocated on CUDA).

    .venv/bin/python bench/bench_train.py                      # default LLM on the CPU
    .venv/bin/python bench/bench_train.py --llm llama2-7b --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm", default="smollm2-135m")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (GPU autocast)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--text-words", type=int, default=40)
    p.add_argument("--audio", default="500x74", help="frames x dims")
    p.add_argument("--video", default="375x35", help="frames x dims")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from msekit.adapter import AdapterConfig, MSEAdapter
    from msekit.llm import llm_hidden_size, load_llm
    from msekit.mllm import MultimodalLLM
    from msekit.prompts import get_prompt

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = None
    if dev.type == "cuda" and args.precision != "fp32":
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
            args.precision, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    t0 = time.perf_counter()
    llm, tok = load_llm(args.llm, device=dev, dtype=amp or torch.float32, trust_remote_code=args.trust_remote_code)
    load_s = time.perf_counter() - t0
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (ta, da), (tv, dv) = (tuple(int(x) for x in s.split("x")) for s in (args.audio, args.video))
    adapter = MSEAdapter(AdapterConfig(llm_hidden_size=llm_hidden_size(llm), audio_dim=da, video_dim=dv))
    model = MultimodalLLM(llm, tok, adapter, get_prompt("mosei"), base_llm=args.llm)
    B = args.batch_size
    g = torch.Generator().manual_seed(0)
    words = "the movie was surprisingly good but the ending felt a bit rushed and".split()
    batch = {
        "ids": [str(i) for i in range(B)],
        "text": [" ".join(words[(i + k) % len(words)] for k in range(args.text_words)) for i in range(B)],
        "audio": torch.randn(B, ta, da, generator=g), "audio_lengths": torch.full((B,), ta),
        "video": torch.randn(B, tv, dv, generator=g), "video_lengths": torch.full((B,), tv),
        "labels": torch.linspace(-3, 3, B),
    }
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4, eps=1e-4)
    ctx = (lambda: torch.autocast(dev.type, dtype=amp)) if amp else (lambda: torch.autocast("cpu", enabled=False))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def adapter_step():
        with ctx():
            loss = model(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    # The same embeddings, mask and targets the adapter step builds, for the LLM-alone pass.
    with torch.no_grad():
        text_ids = model._text_ids(batch["text"])
        pseudo = model.encode(batch, text_ids)
        labels = [model.label_token_ids(s) for s in model.label_texts(batch["labels"])]
        embeds, attn, pos, targets = model._assemble(text_ids, pseudo, labels)
    embeds = embeds.detach().float()

    def llm_step():
        x = embeds.clone().to(llm.dtype).requires_grad_(True)
        with ctx():
            logits = llm(inputs_embeds=x, attention_mask=attn, position_ids=pos, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets[:, 1:].flatten(),
                                                     ignore_index=-100)
        loss.backward()

    def timed(fn) -> list[float]:
        fn()  # warm-up
        out = []
        for _ in range(args.steps):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - t)
        return out

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # interleave the two so that machine-load drift hits both alike
    a_times, l_times = [], []
    for _ in range(2):
        a_times += timed(adapter_step)
        l_times += timed(llm_step)
    a, lone = statistics.median(a_times), statistics.median(l_times)
    res = {
        "llm": args.llm, "device": str(dev), "precision": str(amp) if amp else "fp32", "batch": B,
        "tokens_per_row": int(embeds.shape[1]), "audio": args.audio, "video": args.video,
        "threads": torch.get_num_threads(),
        "adapter_step_s": round(a, 3), "llm_alone_step_s": round(lone, 3), "overhead_ratio": round(a / lone, 3),
        "adapter_params": adapter.num_parameters(), "llm_load_s": round(load_s, 1),
        "peak_rss_after_load_mb": round(rss_loaded), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if dev.type == "cuda":
        res["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(f"adapter step {a:.3f} s | LLM alone {lone:.3f} s | overhead x{a / lone:.3f} (target <= 1.10) | "
          f"peak RSS {res['peak_rss_mb']} MB" + (f" | CUDA {res['peak_cuda_allocated_mb']} MB" if dev.type == "cuda" else ""))
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
