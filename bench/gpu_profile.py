"""Where the time of one MSE-Adapter training step goes on a GPU (run by hand, not a test).

Builds the same frozen Llama-2-7B-shaped model with random weights as ``bench/gpu_check.py``
(bf16, on the GPU, SmolLM2 tokenizer from .gpu/tokenizer), times the adapter's own forward+backward
(audio and video LSTMs, mixer, fusion) apart from the full step, and prints torch.profiler's
top operators by GPU time and by CPU time for a few full steps, and the kernel launches per
step. ``--lstm-under-autocast`` puts the encoders' LSTMs back under autocast (msekit before it
ran them in fp32 outside autocast: under bf16 that misses cuDNN's fused kernel), so one machine
gives the before and after figures.

    PYTHONPATH=. python3 bench/gpu_profile.py [--batch-size 8] [--lstm-under-autocast] [--tiny --device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_train  # noqa: E402
import gpu_check  # noqa: E402


class UnderAutocast(torch.nn.Module):
    """Wraps an LSTM so that it runs under autocast again (the behaviour before the fix)."""

    def __init__(self, lstm: torch.nn.LSTM, device_type: str, amp: torch.dtype | None) -> None:
        super().__init__()
        self.inner, self.device_type, self.amp = lstm, device_type, amp
        self.input_size, self.hidden_size = lstm.input_size, lstm.hidden_size

    def forward(self, packed):
        with torch.autocast(self.device_type, dtype=self.amp, enabled=self.amp is not None):
            return self.inner(packed)


def kernel_launches(prof) -> int:
    """Kernel launches recorded by a profile: CUDA runtime/driver launch calls, or (CPU only)
    the operator calls."""
    events = prof.key_averages()
    launches = sum(e.count for e in events if "LaunchKernel" in e.key)
    return launches or sum(e.count for e in events if e.key.startswith("aten::"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--tokenizer", default=str(gpu_check.REPO / ".gpu" / "tokenizer"))
    p.add_argument("--lstm-under-autocast", action="store_true", help="the LSTMs as before the fix")
    args = p.parse_args()
    dev = torch.device(args.device)
    tok, _ = gpu_check.load_tokenizer_dir(Path(args.tokenizer))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    llm = gpu_check.build_random_llm(gpu_check.llama_config(tok, tiny=args.tiny), dev, dtype)
    model = bench_train.build_model(llm, tok)
    batch = bench_train.make_batch(args.batch_size)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4, eps=1e-4)
    amp = bench_train.autocast_dtype(dev, "bf16")
    if args.lstm_under_autocast:
        for enc in (model.adapter.audio_encoder, model.adapter.video_encoder):
            enc.lstm = UnderAutocast(enc.lstm, dev.type, amp)

    def ctx():
        return bench_train.autocast(dev, amp)

    def step():
        bench_train.train_step(model, batch, opt, dev, amp)

    text_ids = model._text_ids(batch["text"])

    def adapter_only():
        with ctx():
            pseudo = model.encode(batch, text_ids)
        pseudo.float().sum().backward()
        opt.zero_grad(set_to_none=True)

    def encoder_only(name: str):
        enc = getattr(model.adapter, f"{name}_encoder")
        x = batch[name].to(dev)

        def run():
            with ctx():
                out = enc(x, batch[f"{name}_lengths"], name)
            out.float().sum().backward()
            opt.zero_grad(set_to_none=True)
        return run

    def timed(fn):
        return statistics.median(bench_train.step_times(fn, dev, 10))

    for name, fn in [("full step", step), ("adapter fwd+bwd", adapter_only),
                     ("audio LSTM encoder fwd+bwd", encoder_only("audio")),
                     ("video LSTM encoder fwd+bwd", encoder_only("video"))]:
        print(f"{name:<30} {timed(fn) * 1000:8.1f} ms")
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(3):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    print(f"kernel launches per step: {kernel_launches(prof) / 3:.0f}"
          f" (LSTMs {'under autocast, as before' if args.lstm_under_autocast else 'in fp32 outside autocast'})")
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=48))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=18, max_name_column_width=48))


if __name__ == "__main__":
    main()
