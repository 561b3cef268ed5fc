"""Where the adapter loses to the linear probe: the same folds as bench/bench_cv.py, no LLM.

bench_cv.py compares the whole adapter (features -> pseudo tokens -> frozen LLM -> class
strings) with scikit-learn's probe. This bench puts two models in between, trained with the
adapter's own recipe (AdamW, cosine schedule with warm-up, epochs, batch size, best validation
weighted F1 kept), so the gap splits into its parts:

* ``linear``: one Linear layer on the utterance means of the features (the probe's model, but
  fitted by the adapter's optimizer and early stopping instead of to convergence);
* ``front``: the adapter's own front half (text projection, LSTM encoders, Text-Guide-Mixer,
  Multi-Scale-Fusion, dropout, with msekit's scaled init) and a Linear head on the fused vector
  instead of the LLM.

``--text "..."`` gives every clip the same transcript, so the Text-Guide-Mixer's gate ``t`` is one
vector for all clips: on a set where the transcript says nothing about the label (RAVDESS's two
sentences), the difference is what gating by the sentence costs.

``linear`` vs the probe is the recipe; ``front`` vs ``linear`` the adapter's architecture;
bench_cv's adapter vs ``front`` the LLM read-out. Seconds per model, not a speed benchmark.

Usage::

    .venv/bin/python bench/bench_gap.py STORE [--preset ravdess-smollm2-135m] [--seeds 1111,2222]
        [--epochs N] [--select best|last] [--text SENTENCE] [--set key=value ...] [--out /tmp/bench_gap]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

from bench_cv import fold_store, store_folds
from bench_init import _value


def batch_inputs(ds, indices, tokenizer, embed, text: str | None = None):
    """Adapter keyword inputs, (B,) labels and (B, D) utterance means for ``indices`` of ``ds``;
    ``text`` replaces every sample's transcript (the Text-Guide-Mixer's gate is then one vector)."""
    import torch

    from msekit.assembly import left_pad
    from msekit.dataset import collate

    b = collate([ds[i] for i in indices])
    texts = [text] * len(indices) if text is not None else b["text"]
    ids = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) or [0] for t in texts]
    tok, mask = left_pad(ids, max(len(t) for t in ids), 0)  # (B, L), (B, L)
    with torch.no_grad():
        text = embed(tok)  # (B, L, d)
    means = [b[m].sum(1) / b[f"{m}_lengths"].clamp(min=1).unsqueeze(-1) for m in ds.read_modalities]  # (B, D_m)
    x = {"text_embeds": text, "text_mask": mask, "audio": b["audio"], "audio_lengths": b["audio_lengths"],
         "video": b["video"], "video_lengths": b["video_lengths"]}
    return x, torch.tensor([ds.labels[i] for i in indices]), torch.cat(means, dim=1)


def fit(kind: str, cfg, data, tokenizer, embed, seed: int, select: str, text: str | None = None) -> float:
    """Test accuracy of one model on one fold (the epoch of best validation weighted F1, or the last)."""
    import torch
    from sklearn.metrics import f1_score

    from msekit.adapter import MSEAdapter
    from msekit.adapter.init import scaled_init
    from msekit.train.loop import cosine_with_warmup, param_groups

    torch.manual_seed(seed)
    C = len(data.label_names)
    xtr, ytr, mtr = batch_inputs(data.train, data.pool, tokenizer, embed, text)
    xva, yva, mva = batch_inputs(data.valid, range(len(data.valid)), tokenizer, embed, text)
    xte, yte, mte = batch_inputs(data.test, range(len(data.test)), tokenizer, embed, text)
    if kind == "front":
        acfg = replace(cfg.adapter, llm_hidden_size=embed.weight.shape[1],
                       audio_dim=data.train.feature_dims.get("audio", 0),
                       video_dim=data.train.feature_dims.get("video", 0))
        adapter = MSEAdapter(acfg)
        scaled_init(adapter, xtr, embedding_rms_of(embed))
        head = torch.nn.Linear(acfg.fusion_dim, C)
        modules = torch.nn.ModuleList([adapter, head])

        def forward(x, _means):
            a = adapter
            t = a.text_proj(a.pool_text(x["text_embeds"], x["text_mask"]))  # (B, F)
            f = a._modality(a.audio_encoder, x["audio"], x["audio_lengths"], "audio", t.shape[0], t) * t
            f = f + a._modality(a.video_encoder, x["video"], x["video_lengths"], "video", t.shape[0], t) * t
            scales = torch.stack([br(f) for br in a.msf_branches], dim=-1)  # (B, F, 3)
            return head(a.dropout(a.msf_merge(scales.unsqueeze(1)).reshape(f.shape)))  # (B, C)
    else:
        head = torch.nn.Linear(mtr.shape[1], C)
        modules = torch.nn.ModuleList([head])

        def forward(_x, means):
            return head(means)  # (B, C)

    opt = torch.optim.AdamW(param_groups(modules, cfg.weight_decay, cfg.decay_biases), lr=cfg.lr, eps=cfg.adam_eps)
    n, bs = len(ytr), cfg.batch_size
    horizon = math.ceil(n / bs) * round(cfg.warmup_epochs or cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(horizon, int(cfg.warmup_ratio * horizon)))
    gen = torch.Generator().manual_seed(seed)
    best, best_loss, acc = -1.0, math.inf, 0.0
    for _ in range(cfg.epochs):
        modules.train()
        for sel in torch.randperm(n, generator=gen).split(bs):
            x = {k: v[sel] for k, v in xtr.items()}
            loss = torch.nn.functional.cross_entropy(forward(x, mtr[sel]), ytr[sel])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        modules.eval()
        with torch.no_grad():
            lv = forward(xva, mva)
            vloss = float(torch.nn.functional.cross_entropy(lv, yva))
            f1 = f1_score(yva.numpy(), lv.argmax(1).numpy(), average="weighted")
            test = float((forward(xte, mte).argmax(1) == yte).float().mean())
        if select == "last" or f1 > best or (f1 == best and vloss < best_loss):
            best, best_loss, acc = f1, vloss, test
    return acc


def embedding_rms_of(embed) -> float:
    from msekit.adapter.init import embedding_rms

    class _Holder:  # embedding_rms reads llm.get_input_embeddings()
        def get_input_embeddings(self):
            return embed

    return embedding_rms(_Holder())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--preset", default="ravdess-smollm2-135m")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seeds", default="1111,2222,3333")
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--select", choices=("best", "last"), default="best")
    ap.add_argument("--set", nargs="*", default=[], help="more TrainConfig fields, key=value")
    ap.add_argument("--text", default=None, help="one transcript for every clip (default: their own)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/bench_gap")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from msekit.llm import load_llm
    from msekit.train.config import resolve_config
    from msekit.train.data import load_run_data

    labels, parts = store_folds(args.store, args.folds)
    base = resolve_config(args.preset or None, **{k: _value(v) for k, v in (x.split("=", 1) for x in args.set)})
    llm, tok = load_llm(base.llm)
    embed = llm.get_input_embeddings()
    seeds = [int(s) for s in args.seeds.split(",")]
    folds = []
    for fold in range(args.folds):
        store = fold_store(Path(args.store), Path(args.out) / "stores", parts, fold, labels)
        over = {"epochs": args.epochs, "warmup_epochs": args.epochs} if args.epochs else {}
        over |= {k: _value(v) for k, v in (x.split("=", 1) for x in args.set)}
        cfg = resolve_config(args.preset or None, store=str(store), out=str(Path(args.out) / "x"), **over)
        folds.append((cfg, load_run_data(cfg, notice=lambda _: None), len(parts[fold])))
    n = sum(f[2] for f in folds)
    print(f"{args.folds} folds, {n} test samples, recipe of {args.preset or 'the plain defaults'}: lr {base.lr}, "
          f"weight decay {base.weight_decay}, {args.epochs or base.epochs} epochs, batch {base.batch_size}, "
          f"select {args.select}" + (f", {' '.join(args.set)}" if args.set else "")
          + (f", every transcript {args.text!r}" if args.text is not None else ""))
    for kind in ("linear", "front"):
        totals = []
        for seed in seeds:
            totals.append(sum(fit(kind, cfg, data, tok, embed, seed, args.select, args.text) * k for cfg, data, k in folds))
        print(f"{kind:6s} test clips per seed {[round(t) for t in totals]} (of {n}); mean {sum(totals) / len(totals):.1f}",
              flush=True)


if __name__ == "__main__":
    main()
