"""msekit against a plain re-implementation of the paper's reference recipe: same batch, one process.

The reference is written from the paper's description (arXiv 2502.12478, restated in the spec
msekit was built from), not from the authors' code. It shares msekit's adapter module (same
weights: the architecture is the paper's) and differs in how the LLM side is run:

  input       [BOS if the tokenizer adds one] [start marker] [n pseudo tokens] [transcript]
              [end marker] [task prompt] [label tokens], as embeddings, left-padded, with the
              attention mask and position ids passed (assembled here, independently of msekit)
  training    the LLM's forward with logits at every position, cross-entropy over the label
              tokens (-100 elsewhere), backward into the adapter, AdamW (eps 1e-4)
  prediction  Hugging Face ``generate`` on the embeddings, greedy, 4 new tokens (regression)
              or 2 (classes), the answer parsed as a number; unparsable answers are counted

msekit runs ``MultimodalLLM.forward`` (label logits only), ``predict_regression`` (score mode:
constrained decoding that stops at a complete number) and ``score_classes`` (one prefill, the
candidates over the shared cache). Each pair is timed interleaved, A B A B, on one MOSEI-shaped
synthetic batch; the script prints medians, the ratios, and two cross-checks: the reference's
loss equals msekit's, and how many answers each side could not parse.

    .venv/bin/python bench/bench_vs_reference.py                # SmolLM2-135M, CPU, batch 8, 2 threads
    .venv/bin/python bench/bench_vs_reference.py --rounds 5 --batch-size 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_train  # noqa: E402


def reference_inputs(model, batch: dict, pseudo: torch.Tensor, labels: list[str] | None):
    """The reference's LLM input: embeddings (B, T, d), attention mask (B, T), position ids
    (B, T) and targets (B, T) (-100 off the label tokens), left-padded."""
    tok, emb, prompt = model.tokenizer, model.llm.get_input_embeddings(), model.prompt
    dev = emb.weight.device

    def ids(text: str, special: bool = False) -> list[int]:
        return list(tok(text, add_special_tokens=special)["input_ids"]) if text else []

    head = ids(prompt.start_marker, special=True)  # the tokenizer's own BOS, if it has one
    if tok.eos_token_id is not None and head[-1:] == [tok.eos_token_id]:
        head = head[:-1]  # a tokenizer that appends EOS: not in the middle of the input
    tail = ids(prompt.end_marker) + ids(prompt.prompt)
    rows, tgts = [], []
    for i, text in enumerate(batch["text"]):
        lab = ids(model.label_prefix + labels[i]) + [tok.eos_token_id] if labels is not None else []
        parts = [emb(torch.tensor(head, device=dev)), pseudo[i].to(emb.weight.dtype),
                 emb(torch.tensor(ids(text)[: model.max_text_tokens] + tail + lab, device=dev))]
        rows.append(torch.cat(parts))  # (T_i, d)
        tgts.append([-100] * (len(rows[-1]) - len(lab)) + lab)
    T = max(len(r) for r in rows)
    B, d = len(rows), rows[0].shape[1]
    embeds = rows[0].new_zeros(B, T, d)
    mask = torch.zeros(B, T, dtype=torch.long, device=dev)
    targets = torch.full((B, T), -100, dtype=torch.long, device=dev)
    for r, (row, tgt) in enumerate(zip(rows, tgts, strict=True)):
        embeds[r, T - len(row):], mask[r, T - len(row):] = row, 1
        targets[r, T - len(row):] = torch.tensor(tgt, device=dev)
    return embeds, mask, (mask.cumsum(1) - 1).clamp(min=0), targets


def reference_loss(model, batch: dict) -> torch.Tensor:
    """The paper's loss: logits at every position, cross-entropy over the label tokens."""
    pseudo = model.encode(batch)  # (B, n, d)
    embeds, mask, pos, targets = reference_inputs(model, batch, pseudo, model.label_texts(batch["labels"]))
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets[:, 1:].flatten(),
                                             ignore_index=-100)


@torch.no_grad()
def reference_generate(model, batch: dict, new_tokens: int) -> list[str]:
    """The paper's prediction: greedy HF ``generate`` of ``new_tokens`` tokens on the embeddings."""
    embeds, mask, _, _ = reference_inputs(model, batch, model.encode(batch), None)
    out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
    return model.tokenizer.batch_decode(out[:, -new_tokens:], skip_special_tokens=True)


def interleaved(fns: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each function, run in turn (A B C A B C ...) after one warm-up each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm", default="smollm2-135m")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from msekit.decoding import parse_number
    from msekit.llm import load_llm

    llm, tok = load_llm(args.llm)
    torch.manual_seed(0)
    reg, cls = bench_train.build_model(llm, tok), bench_train.build_model(llm, tok, prompt="meld")
    batch = bench_train.make_batch(args.batch_size)
    cls_batch = dict(batch, labels=torch.arange(args.batch_size) % 7)
    opt = torch.optim.AdamW(reg.trainable_parameters(), lr=1e-6, eps=1e-4)

    def step(loss_fn):
        def run():
            loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    res: dict = {"llm": args.llm, "batch": args.batch_size, "threads": torch.get_num_threads(), "rounds": args.rounds,
                 "load_avg_1min": round(os.getloadavg()[0], 2)}
    reg.eval()  # no dropout: both losses on the same pseudo tokens
    with torch.no_grad():
        res["loss_msekit"], res["loss_reference"] = round(reg(batch).item(), 5), round(reference_loss(reg, batch).item(), 5)
    reg.train()
    if not args.skip_train:
        t = interleaved({"msekit": step(lambda: reg(batch)), "reference": step(lambda: reference_loss(reg, batch))},
                        args.rounds)
        res.update(train_msekit_s=round(t["msekit"], 3), train_reference_s=round(t["reference"], 3),
                   train_ratio=round(t["msekit"] / t["reference"], 3))
    reg.eval()
    cls.eval()
    answers = {}

    def keep(name, fn):
        def run():
            answers[name] = fn()
        return run

    t = interleaved({
        "score": keep("score", lambda: reg.predict_regression(batch)),
        "reference4": keep("reference4", lambda: reference_generate(reg, batch, 4)),
        "classes": keep("classes", lambda: cls.score_classes(cls_batch)),
        "prefill": torch.no_grad()(lambda: cls._prefill(cls_batch)),
        "reg_prefill": torch.no_grad()(lambda: reg._prefill(batch)),
        "reference2": keep("reference2", lambda: reference_generate(cls, cls_batch, 2)),
    }, args.rounds)
    values, ok = answers["score"]
    res.update(
        predict_score_s=round(t["score"], 3), predict_reference_generate4_s=round(t["reference4"], 3),
        score_throughput_vs_reference=round(t["reference4"] / t["score"], 3),
        # adapter + one prefill is the least any decoding of this batch costs: the ceiling
        regression_prefill_s=round(t["reg_prefill"], 3),
        score_ceiling_vs_reference=round(t["reference4"] / t["reg_prefill"], 3),
        score_classes_s=round(t["classes"], 3), one_prefill_s=round(t["prefill"], 3),
        classes_vs_prefill=round(t["classes"] / t["prefill"], 3),
        classes_reference_generate2_s=round(t["reference2"], 3),
        unparsed_msekit=int((~ok).sum()),
        unparsed_reference=sum(parse_number(a) is None for a in answers["reference4"]),
        answers_reference=answers["reference4"], values_msekit=[round(v, 1) for v in values.tolist()],
    )
    print(f"train step: msekit {res.get('train_msekit_s')} s vs reference {res.get('train_reference_s')} s "
          f"(x{res.get('train_ratio')}, loss {res['loss_msekit']} vs {res['loss_reference']})")
    print(f"regression: score mode {res['predict_score_s']} s vs reference generate(4) "
          f"{res['predict_reference_generate4_s']} s: throughput x{res['score_throughput_vs_reference']}; "
          f"unparsed {res['unparsed_msekit']} vs {res['unparsed_reference']}")
    print(f"regression: adapter + one prefill alone {res['regression_prefill_s']} s, so no decoding of "
          f"this batch can beat the reference by more than x{res['score_ceiling_vs_reference']}")
    print(f"classes: score_classes {res['score_classes_s']} s = x{res['classes_vs_prefill']} one prefill "
          f"({res['one_prefill_s']} s); reference generate(2) {res['classes_reference_generate2_s']} s")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
