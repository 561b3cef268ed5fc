"""Training-step cost of the MSE-Adapter on a frozen LLM vs the frozen LLM alone.

Compares, on one MOSEI-shaped synthetic batch (text ~50 tokens, audio 500 x 74, video 375 x 35):

  adapter step        adapter forward + LLM forward/backward + adapter backward + AdamW step
  LLM alone           the LLM's forward + backward on the same input embeddings, with the
                      same logits kept as the adapter step (the label positions only) and the
                      same label-token loss, gradient taken w.r.t. the embeddings: like with like
  LLM alone, all      the same with logits at every position (what a plain full-logit loss
  logits              costs; bench/bench_vs_reference.py times the paper's whole recipe)

and reports the median step time of each, the overhead ratio against the like-with-like
baseline (target <= 1.10), the ratio against the full-logit one, and peak memory (RSS on CPU,
max allocated on CUDA). The three are interleaved round by round so load drift hits all alike.

    .venv/bin/python bench/bench_train.py                      # default LLM on the CPU
    .venv/bin/python bench/bench_train.py --llm llama2-7b --device cuda --precision bf16

From Python, :func:`measure` takes an already built (frozen) LLM and its tokenizer, e.g. a
randomly initialised model of the real size (bench/gpu_check.py does that).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (auto | fp32 | bf16 | fp16) on ``device``; None = no autocast."""
    if device.type != "cuda" or precision == "fp32":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        precision, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def autocast(device: torch.device, amp: torch.dtype | None):
    """The autocast context of a step (a disabled one when ``amp`` is None)."""
    return torch.autocast(device.type, dtype=amp) if amp else torch.autocast("cpu", enabled=False)


def train_step(model, batch: dict, opt, device: torch.device, amp: torch.dtype | None) -> None:
    """One adapter training step: forward under autocast, backward, optimizer step."""
    with autocast(device, amp):
        loss = model(batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def step_times(fn, device: torch.device, steps: int) -> list[float]:
    """Wall seconds of ``steps`` calls of ``fn`` after one warm-up call (GPU work included)."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    out = []
    for _ in range(steps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def make_batch(batch_size: int = 8, text_words: int = 40, audio: str = "500x74", video: str = "375x35",
               seed: int = 0) -> dict:
    """A MOSEI-shaped synthetic batch (the dict ``MultimodalLLM.forward`` takes), on the CPU."""
    (ta, da), (tv, dv) = (tuple(int(x) for x in s.split("x")) for s in (audio, video))
    B = batch_size
    g = torch.Generator().manual_seed(seed)
    words = "the movie was surprisingly good but the ending felt a bit rushed and".split()
    return {
        "ids": [str(i) for i in range(B)],
        "text": [" ".join(words[(i + k) % len(words)] for k in range(text_words)) for i in range(B)],
        "audio": torch.randn(B, ta, da, generator=g), "audio_lengths": torch.full((B,), ta),
        "video": torch.randn(B, tv, dv, generator=g), "video_lengths": torch.full((B,), tv),
        "labels": torch.linspace(-3, 3, B),
    }


def build_model(llm, tok, *, audio_dim: int = 74, video_dim: int = 35, prompt: str = "mosei",
                base_llm: str | None = None):
    """A fresh MOSEI-config MSE-Adapter plugged into ``llm`` (a MultimodalLLM)."""
    from msekit.adapter import AdapterConfig, MSEAdapter
    from msekit.llm import llm_hidden_size
    from msekit.mllm import MultimodalLLM
    from msekit.prompts import get_prompt

    adapter = MSEAdapter(AdapterConfig(llm_hidden_size=llm_hidden_size(llm), audio_dim=audio_dim,
                                       video_dim=video_dim))
    return MultimodalLLM(llm, tok, adapter, get_prompt(prompt), base_llm=base_llm)


def measure(llm, tok, device: torch.device | str, amp: torch.dtype | None, *, batch_size: int = 8,
            text_words: int = 40, audio: str = "500x74", video: str = "375x35", steps: int = 5,
            rounds: int = 2, llm_name: str | None = None) -> dict:
    """Median adapter step vs LLM-alone forward+backward on one MOSEI-shaped batch.

    Args:
        llm, tok: a frozen causal LM (already on ``device``) and its tokenizer.
        device: where the LLM lives.
        amp: autocast dtype (None: no autocast), see :func:`autocast_dtype`.
        batch_size, text_words, audio, video: the synthetic batch (``frames x dims``).
        steps: timed steps per round (after one warm-up step); ``rounds`` rounds interleave the two.
        llm_name: recorded in the result.

    Returns:
        A JSON-ready dict: step times, overhead ratio, adapter parameter count, peak memory.
    """
    dev = torch.device(device)
    (_, da), (_, dv) = (tuple(int(x) for x in s.split("x")) for s in (audio, video))
    model = build_model(llm, tok, audio_dim=da, video_dim=dv, base_llm=llm_name)
    adapter = model.adapter
    batch = make_batch(batch_size, text_words, audio, video)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4, eps=1e-4)

    def ctx():
        return autocast(dev, amp)

    def adapter_step():
        train_step(model, batch, opt, dev, amp)

    # The same embeddings, mask and targets the adapter step builds, for the LLM-alone pass.
    with torch.no_grad():
        text_ids = model._text_ids(batch["text"])
        pseudo = model.encode(batch, text_ids)
        labels = [model.label_token_ids(s) for s in model.label_texts(batch["labels"])]
        embeds, attn, pos, targets = model._assemble(text_ids, pseudo, labels)
    embeds = embeds.detach().float()
    K = max(len(x) for x in labels)

    def llm_step(all_logits: bool) -> None:
        # As MultimodalLLM._label_logprobs: the last label token is never an input, and only
        # the K positions that predict label tokens get logits (unless all_logits).
        x = embeds[:, :-1].clone().to(llm.dtype).requires_grad_(True)
        keep = {} if all_logits else {"logits_to_keep": K}
        with ctx():
            logits = llm(inputs_embeds=x, attention_mask=attn[:, :-1], position_ids=pos[:, :-1], use_cache=False,
                         **keep).logits
            loss = torch.nn.functional.cross_entropy(logits[:, -K:].float().flatten(0, 1), targets[:, -K:].flatten(),
                                                     ignore_index=-100)
        loss.backward()

    def timed(fn) -> list[float]:
        return step_times(fn, dev, steps)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # interleave the three so that machine-load drift hits them alike
    a_times, l_times, f_times = [], [], []
    for _ in range(rounds):
        a_times += timed(adapter_step)
        l_times += timed(lambda: llm_step(False))
        f_times += timed(lambda: llm_step(True))
    a, lone, full = (statistics.median(t) for t in (a_times, l_times, f_times))
    res = {
        "llm": llm_name, "device": str(dev), "precision": str(amp) if amp else "fp32", "batch": batch_size,
        "tokens_per_row": int(embeds.shape[1]), "audio": audio, "video": video,
        "threads": torch.get_num_threads(),
        "adapter_step_s": round(a, 4), "llm_alone_step_s": round(lone, 4), "overhead_ratio": round(a / lone, 3),
        "llm_alone_all_logits_s": round(full, 4), "ratio_vs_all_logits": round(a / full, 3),
        "adapter_step_times_s": [round(t, 4) for t in a_times], "llm_alone_times_s": [round(t, 4) for t in l_times],
        "llm_alone_all_logits_times_s": [round(t, 4) for t in f_times],
        "adapter_params": adapter.num_parameters(), "adapter_trainable_params": adapter.num_parameters(True),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if dev.type == "cuda":
        res["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return res


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

    from msekit.llm import load_llm

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = autocast_dtype(dev, args.precision)
    t0 = time.perf_counter()
    llm, tok = load_llm(args.llm, device=dev, dtype=amp or torch.float32, trust_remote_code=args.trust_remote_code)
    load_s = time.perf_counter() - t0
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = measure(llm, tok, dev, amp, batch_size=args.batch_size, text_words=args.text_words,
                  audio=args.audio, video=args.video, steps=args.steps, llm_name=args.llm)
    res.update(llm_load_s=round(load_s, 1), peak_rss_after_load_mb=round(rss_loaded))
    a, lone, full = res["adapter_step_s"], res["llm_alone_step_s"], res["llm_alone_all_logits_s"]
    print(f"adapter step {a:.3f} s | LLM alone, same logits {lone:.3f} s: overhead x{a / lone:.3f} (target <= 1.10) | "
          f"LLM alone, all logits {full:.3f} s: x{a / full:.3f} | "
          f"peak RSS {res['peak_rss_mb']} MB" + (f" | CUDA {res['peak_cuda_allocated_mb']} MB" if dev.type == "cuda" else ""))
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
