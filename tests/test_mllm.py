"""The adapter plugged into frozen causal LMs: assembly, loss, decoding, the plugin promise."""

from __future__ import annotations

import math

import pytest
import torch

from msekit.adapter import AdapterConfig, MSEAdapter
from msekit.errors import MsekitError
from msekit.llm import load_llm, weights_hash
from msekit.mllm import MultimodalLLM, parse_number
from msekit.prompts import get_prompt
from tests.adapter.tiny import HIDDEN, KINDS, bos_tokenizer, smol_tokenizer, tiny_llm

TEXTS = ["I really loved this film", "it was terrible", "okay I guess", "", "best day ever!",
         "not sure what to think about it at all", "meh", "awful, awful acting"]
VALUES = [2.3, -2.3, 0.0, -0.4, 3.0, -1.2, 0.6, -3.0]


def make_batch(B=8, Da=5, Dv=3, labels=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "text": TEXTS[:B],
        "audio": torch.randn(B, 12, Da, generator=g),
        "audio_lengths": torch.tensor([12, 5, 0, 12, 3, 1, 7, 12][:B]),
        "video": torch.randn(B, 6, Dv, generator=g),
        "video_lengths": torch.tensor([6, 6, 2, 0, 6, 4, 1, 5][:B]),
        "labels": torch.tensor(VALUES[:B]) if labels is None else labels,
    }


def make_mllm(llm, tok, prompt="mosei", d=HIDDEN, seed=0, **kw):
    torch.manual_seed(seed)
    adapter = MSEAdapter(AdapterConfig(llm_hidden_size=d, audio_dim=5, video_dim=3, audio_hidden=16, video_hidden=8))
    return MultimodalLLM(llm, tok, adapter, get_prompt(prompt), **kw)


@pytest.fixture(scope="module", params=KINDS)
def tiny(request):
    return request.param, tiny_llm(request.param)


# ---------------------------------------------------------------- prompts and parsing
def test_prompts_of_the_paper():
    mosei, meld, cherma = get_prompt("mosei"), get_prompt("meld"), get_prompt("cherma")
    assert mosei.prompt.endswith("in the range [-3.0, 3.0]. response: The sentiment is")
    assert [mosei.format_label(v) for v in (-2.34, 0.04, -0.04, 3)] == ["-2.3", "0.0", "0.0", "3.0"]
    assert get_prompt("sims-v2").start_marker == "<多模态>" and get_prompt("sims-v2").value_range == (-1.0, 1.0)
    assert meld.class_strings() == [str(i) for i in range(7)] and meld.label_names[4] == "joy"
    assert cherma.label_names[3] == "高兴" and cherma.end_marker == "</多模态>"
    generic = get_prompt("classification", label_names=["neg", "pos"])
    assert "<neg:0, pos:1>" in generic.prompt
    assert "[-1.0, 1.0]" in get_prompt("regression", value_range=(-1, 1)).prompt
    with pytest.raises(MsekitError, match="prompt must be one of"):
        get_prompt("imdb")


def test_parse_number_never_invents_zero():
    assert parse_number(" -2.3<eos>") == -2.3 and parse_number("+1.0 and") == 1.0
    assert parse_number("\u22120.5") == -0.5 and parse_number(".5") == 0.5
    assert parse_number("positive") is None and parse_number("-") is None and parse_number("") is None


# ---------------------------------------------------------------- assembly
def test_single_bos_when_the_tokenizer_has_one():
    llm, tok = tiny_llm("llama"), bos_tokenizer()
    m = make_mllm(llm, tok)
    assert m._prefix == [tok.bos_token_id]
    for piece in (m._start, m._end, m._prompt_ids, m.label_token_ids("-2.3")):
        assert tok.bos_token_id not in piece
    no_bos = make_mllm(tiny_llm("gpt2"), smol_tokenizer())
    assert no_bos._prefix == []


def test_targets_cover_label_tokens_only(tiny):
    m = make_mllm(tiny[1], smol_tokenizer())
    batch = make_batch(3)
    text_ids = m._text_ids(batch["text"])
    labels = [m.label_token_ids(s) for s in ["-2.3", "3.0", "10.0"]]
    embeds, attn, pos, targets = m._assemble(text_ids, m.encode(batch, text_ids), labels)
    for r in range(3):
        kept = targets[r][targets[r] != -100].tolist()
        assert kept == labels[r] and kept[-1] == smol_tokenizer().eos_token_id
    assert (attn == 0).any() and (targets[attn == 0] == -100).all()
    assert (pos[attn == 1] >= 0).all() and (pos[:, -1] == attn.sum(1) - 1).all()


def test_padding_does_not_change_a_sample(tiny):
    """Attention mask and position ids are passed: a sample scores the same alone or padded."""
    m = make_mllm(tiny[1], smol_tokenizer())
    batch = make_batch(8)
    together = m.score_candidates(batch, ["-2.3", "1.0"])
    alone = m.score_candidates({k: v[5:6] for k, v in batch.items()}, ["-2.3", "1.0"])
    assert torch.allclose(together[5:6], alone, atol=1e-4)


def test_scoring_agrees_with_the_loss(tiny):
    m = make_mllm(tiny[1], smol_tokenizer(), prompt="meld")
    batch = make_batch(4, labels=torch.tensor([0, 3, 6, 4]))
    scores = m.score_classes(batch)  # (B, C) via the shared-prefix cache
    assert scores.shape == (4, 7) and (scores < 0).all()
    for i, c in enumerate([0, 3, 6, 4]):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        n_tokens = len(m.label_token_ids(str(c)))
        with torch.no_grad():
            assert torch.allclose(-m(one) * n_tokens, scores[i, c], atol=1e-4)


def _lively(kind, prompt="mosei", seed=0):
    """A tiny LLM and adapter whose answers depend on the sample: random weights at their
    init scale give every row the same answer, which would make a comparison say little."""
    llm = tiny_llm(kind)
    emb = llm.get_input_embeddings().weight
    m = make_mllm(llm, smol_tokenizer(), prompt=prompt, seed=seed)
    with torch.no_grad():
        for p in llm.parameters():
            if p.dim() == 2 and p.data_ptr() != emb.data_ptr():
                p *= 4
        m.adapter.out_proj.weight *= 50
    return m


def _full_rows_scores(m, batch, candidates):
    """The straightforward computation: one whole sequence per (sample, candidate), logits at
    every position, no cache."""
    text_ids = m._text_ids(batch["text"])
    pseudo = m.encode(batch, text_ids)
    out = torch.zeros(len(text_ids), len(candidates))
    for i, t in enumerate(text_ids):
        for c, cand in enumerate(candidates):
            lab = m.label_token_ids(cand)
            embeds, attn, pos, targets = m._assemble([t], pseudo[i : i + 1], [lab])
            logp = torch.log_softmax(m.llm(inputs_embeds=embeds, attention_mask=attn, position_ids=pos).logits.float(), -1)
            tgt = targets[0, 1:]  # position p predicts token p+1
            keep = tgt != -100
            out[i, c] = logp[0, :-1][keep].gather(-1, tgt[keep].unsqueeze(-1)).sum()
    return out


@pytest.mark.parametrize("candidates", [
    [str(i) for i in range(7)],  # one shared first token (" "), then the digit, then EOS
    ["-2.3", "1.0", "10.5", "3"],  # unequal lengths, no common prefix
    ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"],
])
@pytest.mark.parametrize("kind", KINDS)
def test_fast_scoring_equals_the_full_computation(kind, candidates):
    m = _lively(kind, prompt="meld")
    batch = make_batch(5)
    with torch.no_grad():
        fast = m.score_candidates(batch, candidates)
        full = _full_rows_scores(m, batch, candidates)
    assert torch.allclose(fast, full, atol=1e-4)
    assert torch.allclose(fast.softmax(-1), full.softmax(-1), atol=1e-5)


@pytest.mark.parametrize("path", ["groups", "groups_no_cache", "eager", "no_4d_mask"])
def test_every_scoring_path_equals_the_full_computation(path, monkeypatch):
    """Candidates split over several forwards on the prompt's cache (or, with no cache to cut
    back, each with the prompt again), the eager attention's float mask, and the full-row
    fallback of attentions without a 4D mask."""
    from msekit import scoring

    m = _lively("llama", prompt="meld")
    if path.startswith("groups"):
        monkeypatch.setattr(scoring, "KEPT_POSITIONS", 12)  # 5 rows: 1 fed token per forward
        if path == "groups_no_cache":
            monkeypatch.setattr(scoring, "cache_of", lambda out: None)
    elif path == "eager":
        m.llm.set_attn_implementation("eager")
    else:
        monkeypatch.setattr(scoring, "takes_4d_mask", lambda llm: False)
    batch, candidates = make_batch(5), ["-2.3", "1.0", "10.5", "3", "neutral"]
    with torch.no_grad():
        fast = m.score_candidates(batch, candidates)
        full = _full_rows_scores(m, batch, candidates)
    assert torch.allclose(fast.softmax(-1), full.softmax(-1), atol=1e-5)
    assert torch.allclose(fast, full, atol=1e-4)


def test_candidate_tokens_see_the_prompt_and_their_own_candidate_only():
    from msekit.scoring import group_mask, groups, layout

    cands = [[9, 1, 5, 0], [9, 2, 0], [9, 3, 6, 7, 0]]  # a shared first token, unequal lengths
    lay = layout(cands, [0, 1, 2], P=1)
    assert lay.ids.tolist() == [9, 1, 5, 2, 3, 6, 7] and lay.seg.tolist() == [-1, 0, 0, 1, 2, 2, 2]
    assert lay.offset.tolist() == [1, 2, 3, 2, 2, 3, 4]  # each candidate continues the prompt alone
    # token k of a candidate is predicted at kept position 0 (prompt end), 1 (shared) or its own
    assert lay.where.tolist() == [0, 1, 2, 3, 0, 1, 4, 0, 1, 5, 6, 7]
    assert lay.target.tolist() == sum(cands, []) and lay.cand.tolist() == [0] * 4 + [1] * 3 + [2] * 5
    attn = torch.tensor([[0, 1, 1], [1, 1, 1]])  # row 0 left-padded
    mask = group_mask(attn, lay.seg, with_prompt=False)[:, 0]  # (b, L, T+L), True = attend
    additive = group_mask(attn, lay.seg, with_prompt=False, dtype=torch.float32)[:, 0]
    assert torch.equal(additive == 0, mask) and additive.min() == torch.finfo(torch.float32).min
    assert mask.shape == (2, 7, 10)
    assert not mask[0, :, 0].any() and mask[1, :, 0].all()  # padding is never seen
    assert mask[:, 6, 3:].tolist() == [[True, False, False, False, True, True, True]] * 2
    full = group_mask(attn, lay.seg, with_prompt=True)[0, 0]  # (T+L, T+L)
    assert not full[:3, 3:].any() and full[0, 0] and not full[1, 0]  # the prompt sees no candidate
    assert groups(cands, 1, budget=4) == [[0, 1], [2]] and groups(cands, 1, budget=1) == [[0], [1], [2]]


def _plain_constrained(m, batch, steps):
    """Constrained decoding the straightforward way: each step reruns the whole sequence with
    logits at every position, no cache, and runs all ``steps`` steps."""
    grammar, embed = m.number_grammar(), m.llm.get_input_embeddings()
    text_ids = m._text_ids(batch["text"])
    embeds, attn, pos, _ = m._assemble(text_ids, m.encode(batch, text_ids), None)
    texts, tokens, done = [""] * len(text_ids), [[] for _ in text_ids], [False] * len(text_ids)
    for _ in range(steps):
        logits = m.llm(inputs_embeds=embeds, attention_mask=attn, position_ids=pos).logits[:, -1].float()
        nxt = grammar.pick(logits, texts)
        for r, t in enumerate(nxt.tolist()):
            done[r] = done[r] or t in m._eos_ids
            if not done[r]:
                tokens[r].append(t)
                texts[r] += grammar.texts[t]
        embeds = torch.cat([embeds, embed(nxt).unsqueeze(1)], dim=1)
        attn = torch.cat([attn, attn.new_ones(len(texts), 1)], dim=1)
        pos = torch.cat([pos, pos[:, -1:] + 1], dim=1)
    return [m.decode_new_tokens(t) for t in tokens]


@pytest.mark.parametrize("kind", KINDS)
def test_fast_constrained_decoding_equals_the_full_computation(kind):
    answers = set()
    for seed in range(2):
        m = _lively(kind, seed=seed)
        batch = make_batch(8, seed=seed)
        with torch.no_grad():
            values, ok = m.predict_regression(batch)
            plain = _plain_constrained(m, batch, steps=m._default_new_tokens() + 2)
        expected = torch.tensor([min(max(parse_number(t), -3.0), 3.0) for t in plain])
        assert ok.all() and torch.equal(values, expected), (values, plain)
        answers.update(plain)
    assert len(answers) > 1  # the rows differ, so the comparison says something


def test_default_budget_is_the_longest_label_plus_one():
    tok = smol_tokenizer()
    assert tok.convert_ids_to_tokens(tok(" -3.0", add_special_tokens=False).input_ids) == ["Ġ-", "3", ".", "0"]
    assert make_mllm(tiny_llm("llama"), tok)._default_new_tokens() == 5  # " -3.0" + EOS
    assert make_mllm(tiny_llm("llama"), tok, prompt="meld")._default_new_tokens() == 3  # " ", "6", EOS


def test_grammar_keeps_every_answer_a_label_format_number():
    g = make_mllm(tiny_llm("llama"), smol_tokenizer()).number_grammar()
    for text in ["", " ", " -", "-2", " -2.", "2"]:
        for t in g.allowed(text).tolist():
            nxt = text + g.texts.get(t, "")
            assert t in g.eos_ids or g._prefix.fullmatch(nxt), (text, nxt)
    assert g.complete(" -2.3") and g.complete("+0.0") and not g.complete("-2.") and not g.complete("12.0")
    assert g.allowed(" -2.3").tolist() == g.eos_ids  # nothing may follow a complete number
    assert not any(g.texts[t].strip().isdigit() for t in g.allowed("2.3").tolist() if t in g.texts)


def test_decoding_keeps_only_new_tokens_and_negative_signs():
    m = make_mllm(tiny_llm("llama"), smol_tokenizer())
    tok = smol_tokenizer()
    ids = m.label_token_ids("-2.3") + tok(" junk", add_special_tokens=False).input_ids
    assert m.decode_new_tokens(ids) == "-2.3"
    assert parse_number(m.decode_new_tokens(ids)) == -2.3


def test_width_mismatch_is_refused():
    with pytest.raises(MsekitError, match="does not match the LLM's hidden size 64"):
        make_mllm(tiny_llm("qwen2"), smol_tokenizer(), d=128)


# ---------------------------------------------------------------- the plugin promise
def _fixed_generations(llm, tok):
    enc = tok(["The movie was", "Numbers: 1, 2,"], return_tensors="pt", padding=True)
    return llm.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)


def _train(m, batch, steps, lr):
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=lr)
    m.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = m(batch)
        loss.backward()
        opt.step()
    m.eval()
    return loss.item()


class ScriptedLM(torch.nn.Module):
    """A stand-in causal LM that answers a fixed token script, whatever the input."""

    def __init__(self, script, vocab, width=HIDDEN):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.script, self.vocab, self.calls = script, vocab, 0
        self.config = type("Cfg", (), {"_name_or_path": "scripted"})()

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return None

    def forward(self, inputs_embeds, attention_mask=None, position_ids=None, cache=None, use_cache=False, logits_to_keep=0):
        step = 0 if cache is None else cache + 1
        self.calls += 1
        B, T, _ = inputs_embeds.shape
        logits = torch.zeros(B, T, self.vocab)
        logits[:, -1, self.script[min(step, len(self.script) - 1)]] = 10.0
        return type("Out", (), {"logits": logits, "cache": step})()


def test_generation_decodes_only_new_tokens_and_keeps_the_minus_sign():
    tok = smol_tokenizer()
    answer = tok(" -2.3", add_special_tokens=False).input_ids + [tok.eos_token_id]
    lm = ScriptedLM(answer, len(tok))
    m = make_mllm(lm, tok)
    batch = make_batch(2)
    assert m.generate(batch) == ["-2.3", "-2.3"] and lm.calls == 5  # stops at EOS
    lm.calls = 0
    values, ok = m.predict_regression(batch)
    assert ok.all() and torch.allclose(values, torch.tensor([-2.3, -2.3]))
    assert lm.calls == 4  # the number is complete after "3": no step spent waiting for EOS
    words = make_mllm(ScriptedLM(tok(" positive", add_special_tokens=False).input_ids, len(tok)), tok)
    assert words.generate(batch, max_new_tokens=1)[0] == "positive"
    values, ok = words.predict_regression(batch)  # constrained decoding cannot say "positive"...
    assert ok.all() and ((values >= -3) & (values <= 3)).all()  # ...and always writes a number
    longer = tok(" -2.35", add_special_tokens=False).input_ids + [tok.eos_token_id]
    values, _ = make_mllm(ScriptedLM(longer, len(tok)), tok).predict_regression(batch)
    assert torch.allclose(values, torch.tensor([-2.3, -2.3]))  # the label format has one decimal


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_training_moves_only_the_adapter(kind, tmp_path):
    llm, tok = tiny_llm(kind), smol_tokenizer()
    before_hash, before_gen = weights_hash(llm), _fixed_generations(llm, tok)
    m = make_mllm(llm, tok)
    batch = make_batch(8)
    first = m(batch)
    first.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.adapter.parameters())
    assert all(p.grad is None for p in llm.parameters())
    m.adapter.zero_grad()
    last = _train(m, batch, steps=8, lr=1e-2)
    assert last < first.item(), (first.item(), last)
    assert weights_hash(llm) == before_hash
    assert torch.equal(_fixed_generations(llm, tok), before_gen)
    # adapter-only folder; the reloaded adapter predicts the same
    texts = m.generate(batch)
    m.save_adapter(tmp_path, extra_meta={"audio_dim": 5, "video_dim": 3})
    assert sum(f.stat().st_size for f in tmp_path.iterdir()) < 2e6
    again = MultimodalLLM.from_adapter(tmp_path, llm, tok, feature_spec={"audio_dim": 5})
    assert again.generate(batch) == texts


def test_classification_save_load_scores_identically(tmp_path):
    llm, tok = tiny_llm("qwen2"), smol_tokenizer()
    classes = torch.tensor([0, 1, 2, 3, 4, 5, 6, 4])
    m = make_mllm(llm, tok, prompt="meld")
    batch = make_batch(8, labels=classes)
    _train(m, batch, steps=3, lr=1e-2)
    scores = m.score_classes(batch)
    m.save_adapter(tmp_path)
    again = MultimodalLLM.from_adapter(tmp_path, llm, tok)
    assert again.prompt == m.prompt and torch.equal(again.score_classes(batch), scores)
    line = m.print_trainable_parameters()
    assert line.startswith("trainable params: ") and "|| all params: " in line


@pytest.fixture
def two_threads():
    """Pins torch to 2 threads (the figures below were measured so) and restores the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


FIT_BUDGET = 240  # steps: 4x the measured need (see the test's docstring)


@pytest.mark.slow
def test_real_default_llm_fits_eight_samples(two_threads):
    """SmolLM2-135M stays frozen while the adapter alone makes it write the 8 labels it was
    trained on, digit for digit (lr 2e-2, 2 threads). Measured need: 60 steps (2-core CPU,
    torch 2.13, checked every 10); the budget gives the optimizer 4x that, so only a real
    regression runs out of it, not a machine whose floating point rounds differently."""
    llm, tok = load_llm()
    before_hash = weights_hash(llm)
    m = make_mllm(llm, tok, d=576)
    batch = make_batch(8)
    wanted = [m.prompt.format_label(v) for v in VALUES]
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=2e-2)
    written = None
    for step in range(1, FIT_BUDGET + 1):
        m.train()
        opt.zero_grad()
        m(batch).backward()
        opt.step()
        if step % 10 == 0:
            m.eval()
            values, ok = m.predict_regression(batch)
            written = [m.prompt.format_label(v) for v in values.tolist()]
            if ok.all() and written == wanted:
                break
    print(f"8 labels reproduced after {step} steps")
    assert written == wanted, (step, written)
    assert weights_hash(llm) == before_hash


@pytest.mark.slow
def test_real_default_llm_scores_like_the_full_computation():
    """SmolLM2-135M, left-padded rows, the 7 MELD classes and candidates of unequal length:
    the one-forward scoring equals one whole sequence per (sample, candidate)."""
    llm, tok = load_llm()
    m = make_mllm(llm, tok, prompt="meld", d=576)
    m.eval()
    batch = make_batch(4)
    for candidates in (m.prompt.class_strings(), ["-2.3", "1.0", "10.5", "neutral"]):
        with torch.no_grad():
            fast = m.score_candidates(batch, candidates)
            full = _full_rows_scores(m, batch, candidates)
        assert torch.allclose(fast.softmax(-1), full.softmax(-1), atol=1e-5)
        assert torch.equal(fast.argmax(-1), full.argmax(-1))


@pytest.mark.slow  # ~15-30 s on 2 free cores; minutes on a busy machine
def test_real_default_llm_end_to_end():
    """SmolLM2-135M (offline default): frozen, gradients to the adapter only, unchanged after steps."""
    llm, tok = load_llm()
    before_hash, before_gen = weights_hash(llm), _fixed_generations(llm, tok)
    m = make_mllm(llm, tok, d=576)
    assert m._prefix == []  # SmolLM2's tokenizer adds no BOS, so neither does msekit
    batch = make_batch(4)
    first = _train(m, batch, steps=2, lr=1e-3)
    assert all(p.grad is not None for p in m.adapter.parameters())
    assert all(p.grad is None for p in llm.parameters())
    assert math.isfinite(first)
    values, ok = m.predict_regression(batch)
    assert values.shape == (4,) and ok.all()  # the number grammar leaves nothing unparsable
    assert ((values >= -3) & (values <= 3)).all()
    assert weights_hash(llm) == before_hash
    assert torch.equal(_fixed_generations(llm, tok), before_gen)


# ---------------------------------------------------------------- the class loss (--class-loss)
@pytest.mark.parametrize("path", ["4d_mask", "no_4d_mask"])
def test_class_loss_adds_the_cross_entropy_over_the_classes(path, monkeypatch):
    if path == "no_4d_mask":
        monkeypatch.setattr("msekit.scoring.takes_4d_mask", lambda llm: False)
    m = _lively("qwen2", prompt="meld")
    y = torch.tensor([0, 3, 6, 4, 1])
    batch = make_batch(5, labels=y)
    with torch.no_grad():
        token_loss = m(batch)  # the paper's loss
        full = _full_rows_scores(m, batch, m.prompt.class_strings())  # (B, C), the plain computation
        m.class_loss = 0.7
        mixed = m(batch)
    n_tokens = sum(len(m.label_token_ids(str(c))) for c in y.tolist())
    torch.testing.assert_close(token_loss, -full.gather(1, y.unsqueeze(1)).sum() / n_tokens, atol=1e-4, rtol=0)
    ce = torch.nn.functional.cross_entropy(full, y)
    assert ce > 0.1  # the classes are not yet separated, so the extra term is not negligible
    torch.testing.assert_close(mixed, token_loss + 0.7 * ce, atol=1e-4, rtol=0)


def test_class_loss_trains_the_adapter_only():
    m = _lively("qwen2", prompt="meld")
    m.class_loss = 1.0
    m(make_batch(4, labels=torch.tensor([2, 1, 5, 0]))).backward()
    grads = [p.grad for p in m.adapter.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in m.llm.parameters())
