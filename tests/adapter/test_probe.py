"""The adapter's linear path and its warm start from a linear probe (msekit.adapter.probe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msekit.adapter import AdapterConfig, MSEAdapter
from msekit.adapter.probe import fit_path, scale_path
from msekit.baseline import fit_probe
from msekit.errors import MsekitError
from tests.adapter.test_model import D, inputs, make


def _means(x):  # the utterance means the adapter computes for a batch of inputs(...)
    B = x["text_embeds"].shape[0]
    with torch.no_grad():
        return make(path_outputs=3, linear_path=True).utterance_means(x["audio"], x["audio_lengths"], x["video"],
                                                    x["video_lengths"], B, x["text_embeds"])


def test_utterance_means_ignore_padding_and_give_zeros_for_a_missing_modality():
    x = inputs(B=3)
    x["audio_lengths"] = torch.tensor([10, 4, 1])
    x["video_lengths"] = torch.tensor([7, 0, 2])
    m = _means(x)  # (B, 5 + 3)
    assert m.shape == (3, 8)
    for b, (na, nv) in enumerate([(10, 7), (4, 0), (1, 2)]):
        assert torch.allclose(m[b, :5], x["audio"][b, :na].mean(dim=0), atol=1e-6)
        want_v = x["video"][b, :nv].mean(dim=0) if nv else torch.zeros(3)
        assert torch.allclose(m[b, 5:], want_v, atol=1e-6)
    x["video"] = None  # the whole batch lacks video
    assert torch.equal(_means(x)[:, 5:], torch.zeros(3, 3))


def test_the_path_exists_only_when_sized_and_costs_what_it_says():
    base = make()
    assert not hasattr(base, "path") and not base.config.linear_path  # opt-in
    assert not hasattr(make(linear_path=True), "path")  # on, but not sized yet: no path
    ad = make(path_outputs=3, linear_path=True)
    extra = (5 + 3) * 3 + 3 + 3 * D + D  # Linear(Da + Dv -> K) + Linear(K -> d)
    assert ad.num_parameters() == base.num_parameters() + extra
    assert not hasattr(make(path_outputs=3, linear_path=False), "path")
    with pytest.raises(MsekitError, match="path_outputs must be a non-negative integer"):
        AdapterConfig(llm_hidden_size=D, audio_dim=5, path_outputs=-1)


def test_an_adapter_config_saved_before_the_path_loads_without_it():
    d = make().config.to_dict()
    for key in ("linear_path", "path_outputs"):
        d.pop(key)
    cfg = AdapterConfig.from_dict(d)
    assert cfg.linear_path is False and not cfg.has_path


@pytest.mark.parametrize("K", [3, 2])
def test_fit_path_reproduces_the_probe_class_probabilities(K):
    x = inputs(B=24, seed=5)
    means = _means(x).numpy().astype(np.float64)
    y = np.arange(24) % K
    ad = make(linear_path=True, path_outputs=K)
    info = fit_path(ad, means, y.tolist(), "classification")
    want = fit_probe(means, y, "classification").predict_proba(means)  # (N, K)
    with torch.no_grad():
        got = ad.path_evidence(torch.as_tensor(means, dtype=torch.float32)).numpy()
    assert np.abs(got - want).max() < 1e-4
    assert info["train_accuracy"] == pytest.approx(float((want.argmax(1) == y).mean()))


def test_a_class_missing_from_the_train_split_gets_no_probability():
    x = inputs(B=12, seed=6)
    means = _means(x).numpy()
    y = np.arange(12) % 2 * 2  # classes 0 and 2 of 3
    ad = make(linear_path=True, path_outputs=3)
    fit_path(ad, means, y.tolist(), "classification")
    with torch.no_grad():
        p = ad.path_evidence(torch.as_tensor(means)).numpy()
    assert p[:, 1].max() < 1e-3
    want = fit_probe(means, y, "classification").predict_proba(means)  # columns: classes 0, 2
    assert np.abs(p[:, [0, 2]] - want).max() < 1e-3


def test_fit_path_standardizes_the_ridge_value_for_regression():
    x = inputs(B=20, seed=7)
    means = _means(x).numpy()
    y = means[:, 0] * 2.0 + np.linspace(-1, 1, 20)
    ad = make(linear_path=True, path_outputs=1)
    info = fit_path(ad, means, y.tolist(), "regression")
    pred = fit_probe(means, y, "regression").predict(means)
    with torch.no_grad():
        got = ad.path_evidence(torch.as_tensor(means)).numpy()[:, 0]
    assert np.abs(got - (pred - pred.mean()) / pred.std()).max() < 1e-4
    assert info["train_r"] == pytest.approx(float(np.corrcoef(pred, y)[0, 1]))


def test_fit_path_refuses_an_adapter_without_a_path_and_a_wrong_width():
    with pytest.raises(MsekitError, match="no linear path"):
        fit_path(make(), np.zeros((4, 8)), [0, 1, 0, 1], "classification")
    with pytest.raises(MsekitError, match=r"means must be \(N, 8\)"):
        fit_path(make(linear_path=True, path_outputs=2), np.zeros((4, 7)), [0, 1, 0, 1], "classification")


def test_scale_path_puts_the_path_at_the_embedding_scale_centred():
    x = inputs(B=16, seed=8)
    ad = make(linear_path=True, path_outputs=3)
    fit_path(ad, _means(x).numpy(), (np.arange(16) % 3).tolist(), "classification")
    scale_path(ad, x, embed_rms=0.25)
    with torch.no_grad():
        e = ad.path_proj(ad.path_evidence(_means(x)))  # (B, d)
    assert float(e.std(dim=0).mean()) == pytest.approx(0.25, rel=1e-4)
    assert e.mean(dim=0).abs().max() < 1e-5


def test_the_path_adds_the_same_vector_to_every_pseudo_token():
    x = inputs(B=4)
    ad = make(linear_path=True, path_outputs=3, pseudo_token_mode="full", num_pseudo_tokens=3)
    with torch.no_grad():
        out = ad(**x)  # (B, n, d)
        e = ad.path_proj(ad.path_evidence(_means(x)))  # (B, d)
        ad.path_proj.weight.zero_()
        ad.path_proj.bias.zero_()
        without = ad(**x)
    assert torch.allclose(out - without, e.unsqueeze(1).expand_as(out), atol=1e-6)
    assert not torch.allclose(e[0], e[1])  # the path depends on the input


def test_gradients_reach_the_path():
    ad = make(linear_path=True, path_outputs=3).train()
    ad(**inputs()).pow(2).sum().backward()
    assert ad.path.weight.grad.abs().sum() > 0 and ad.path_proj.weight.grad.abs().sum() > 0


def test_a_model_with_the_path_is_built_by_its_own_config():
    ad = make(linear_path=True, path_outputs=2)
    again = MSEAdapter(AdapterConfig.from_dict(ad.config.to_dict()))
    assert set(again.state_dict()) == set(ad.state_dict())


def _meld_model_with_probe(llm, tok, **adapter_kw):
    """A 7-class MELD model whose path holds a probe fitted on 8 samples: (model, batch, means)."""
    from msekit.mllm import MultimodalLLM
    from msekit.prompts import get_prompt
    from tests.test_mllm import make_batch

    torch.manual_seed(0)
    d = llm.get_input_embeddings().weight.shape[1]
    ad = MSEAdapter(AdapterConfig(llm_hidden_size=d, audio_dim=5, video_dim=3, linear_path=True, path_outputs=7,
                                  **adapter_kw))
    m = MultimodalLLM(llm, tok, ad, get_prompt("meld"))
    batch = make_batch(8, labels=torch.tensor([0, 1, 2, 3, 4, 5, 6, 4]))
    with torch.no_grad():
        means = ad.utterance_means(batch["audio"], batch["audio_lengths"], batch["video"],
                                   batch["video_lengths"], 8, ad.path.weight)  # (8, 5 + 3)
    fit_path(ad, means.numpy(), batch["labels"].tolist(), "classification")
    return m, batch, means


def test_evidence_given_to_the_adapter_stands_in_for_the_path_own():
    ad = make(linear_path=True, path_outputs=3).eval()
    x = inputs()
    B = x["text_embeds"].shape[0]
    with torch.no_grad():
        own = ad.path_evidence(_means(x))  # (B, 3)
        assert torch.equal(ad(**x), ad(**x, evidence=own))
        other = torch.eye(3)[torch.arange(B) % 3]  # (B, 3) one-hot, not the path's
        moved = ad(**x, evidence=other) - ad(**x)  # (B, n, d): only the path's term changes
    want = (ad.path_proj.weight @ (other - own).T).T.unsqueeze(1)  # (B, 1, d)
    assert torch.allclose(moved, want.expand_as(moved), atol=1e-5)


def _follows_evidence(m, batch, evidence):
    """Cross-entropy between ``evidence`` (B, K) and the LLM's softmax over the class strings."""
    from msekit.scoring import score_chunk

    text_ids = m._text_ids(batch["text"], batch.get("text_ids"))
    cand = [m.label_token_ids(c) for c in m.prompt.class_strings()]
    with torch.no_grad():
        scores = score_chunk(m, text_ids, m.encode(batch, text_ids, evidence=evidence), cand)  # (B, K)
    return float(-(evidence * scores.log_softmax(dim=-1)).sum(dim=-1).mean()), scores.argmax(dim=-1)


def test_fit_readout_teaches_the_frozen_llm_the_path_classes_and_moves_nothing_else():
    from msekit.adapter.probe import fit_readout
    from tests.adapter.tiny import smol_tokenizer, tiny_llm

    m, batch, means = _meld_model_with_probe(tiny_llm("qwen2"), smol_tokenizer(), audio_hidden=16, video_hidden=8)
    ad = m.adapter
    ad.out_proj.requires_grad_(False)  # a flag the fit must give back as it found it
    m.eval()
    frozen = {n: p.detach().clone() for n, p in m.named_parameters() if not n.startswith("adapter.path_proj")}
    proj = ad.path_proj.weight.detach().clone()
    own = ad.path_evidence(means).detach()  # (8, 7)
    eval_before, _ = _follows_evidence(m, batch, own)
    rng = torch.get_rng_state()
    before, after = fit_readout(m, batch, 1.0, steps=40)  # the random tiny LLM needs big inputs
    assert torch.equal(torch.get_rng_state(), rng)  # the made-up evidence draws from its own generator
    eval_after, _ = _follows_evidence(m, batch, own)
    # the random tiny LLM answers almost uniformly whatever its input: the loss moves little, but
    # without a fit (no step, a wrong parameter) it would not move at all (dropout is 0 here)
    assert after < before and eval_after < eval_before, (before, after, eval_before, eval_after)
    assert not torch.equal(ad.path_proj.weight, proj)
    assert all(torch.equal(p, frozen[n]) for n, p in m.named_parameters() if n in frozen)
    assert not ad.out_proj.weight.requires_grad and ad.path_proj.weight.requires_grad
    assert not m.training


def test_made_up_evidence_mixes_dirichlet_draws_and_near_ties_of_two_classes():
    from msekit.adapter import probe

    e = probe.made_up_evidence(np.random.default_rng(7), (50, 40), 8)  # (steps, n, K)
    assert e.shape == (50, 40, 8) and np.allclose(e.sum(axis=-1), 1) and (e >= 0).all()
    two = (e > 0).sum(axis=-1) == 2  # a Dirichlet draw has all 8 classes above 0
    share = two.mean()
    assert abs(share - probe.READOUT_TIES) < 0.05, share  # 2000 draws: SE about 0.011
    top = np.sort(e[two], axis=-1)[:, -2:]  # (ties, 2): the two classes' mass
    assert ((top[:, 1] >= 0.5) & (top[:, 1] <= 0.65) & (top[:, 0] >= 0.35)).all()
    assert np.allclose(top.sum(axis=-1), 1)
    again = probe.made_up_evidence(np.random.default_rng(7), (50, 40), 8)
    assert np.array_equal(e, again)


def test_fit_readout_is_the_same_for_the_same_seed():
    from msekit.adapter.probe import fit_readout
    from tests.adapter.tiny import smol_tokenizer, tiny_llm

    llm, tok = tiny_llm("qwen2"), smol_tokenizer()
    fitted = []
    for seed in (0, 0, 1):
        m, batch, _ = _meld_model_with_probe(llm, tok, audio_hidden=16, video_hidden=8)
        fit_readout(m, batch, 1.0, steps=3, seed=seed)
        fitted.append(m.adapter.path_proj.weight.detach().clone())
    assert torch.equal(fitted[0], fitted[1]) and not torch.equal(fitted[0], fitted[2])


@pytest.mark.slow
def test_the_readout_fit_makes_the_real_llm_answer_what_the_path_says():
    """SmolLM2-135M, 7 MELD classes, 8 samples: once the path holds a probe (which fits them all)
    and its read-out is fitted, the frozen LLM's class answers follow the path's evidence with no
    training step (the point of the warm start): on the samples' own evidence, and on made-up
    evidence it was not fitted on (other Dirichlet draws: soft mixtures, as unseen clips give)."""
    from msekit.adapter.init import capture_inputs, embedding_rms
    from msekit.adapter.probe import READOUT_CONCENTRATION, fit_readout, share_encoders
    from msekit.llm import load_llm

    llm, tok = load_llm()
    m, batch, means = _meld_model_with_probe(llm, tok, dropout=0.3)
    ad = m.adapter
    own = ad.path_evidence(means).detach()  # (8, 7)
    assert torch.equal(own.argmax(dim=1), batch["labels"])
    rms = embedding_rms(llm)
    scale_path(ad, capture_inputs(m, batch), rms)
    share_encoders(ad)
    m.eval()
    draws = np.random.default_rng(12345).dirichlet(np.full(7, READOUT_CONCENTRATION), size=8)  # not the fit's
    unseen = torch.as_tensor(draws, dtype=torch.float32)  # (8, 7)

    def agreement(evidence):
        ce, answer = _follows_evidence(m, batch, evidence)
        return int((answer == evidence.argmax(dim=1)).sum()), ce

    own_before, unseen_before = agreement(own), agreement(unseen)
    fit_readout(m, batch, rms)
    own_after, unseen_after = agreement(own), agreement(unseen)
    print(f"agree with the evidence (of 8), cross-entropy: own {own_before} -> {own_after}, "
          f"unseen {unseen_before} -> {unseen_after}")
    assert own_after[0] > own_before[0] and own_after[1] < own_before[1]
    assert unseen_after[0] > unseen_before[0] and unseen_after[1] < unseen_before[1]
