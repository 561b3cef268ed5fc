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
        return make(path_outputs=3).utterance_means(x["audio"], x["audio_lengths"], x["video"],
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
    assert not hasattr(base, "path") and base.config.linear_path  # on, but not sized yet: no path
    ad = make(path_outputs=3)
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
    ad = make(path_outputs=K)
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
    ad = make(path_outputs=3)
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
    ad = make(path_outputs=1)
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
        fit_path(make(path_outputs=2), np.zeros((4, 7)), [0, 1, 0, 1], "classification")


def test_scale_path_puts_the_path_at_the_embedding_scale_centred():
    x = inputs(B=16, seed=8)
    ad = make(path_outputs=3)
    fit_path(ad, _means(x).numpy(), (np.arange(16) % 3).tolist(), "classification")
    scale_path(ad, x, embed_rms=0.25)
    with torch.no_grad():
        e = ad.path_proj(ad.path_evidence(_means(x)))  # (B, d)
    assert float(e.std(dim=0).mean()) == pytest.approx(0.25, rel=1e-4)
    assert e.mean(dim=0).abs().max() < 1e-5


def test_the_path_adds_the_same_vector_to_every_pseudo_token():
    x = inputs(B=4)
    ad = make(path_outputs=3, pseudo_token_mode="full", num_pseudo_tokens=3)
    with torch.no_grad():
        out = ad(**x)  # (B, n, d)
        e = ad.path_proj(ad.path_evidence(_means(x)))  # (B, d)
        ad.path_proj.weight.zero_()
        ad.path_proj.bias.zero_()
        without = ad(**x)
    assert torch.allclose(out - without, e.unsqueeze(1).expand_as(out), atol=1e-6)
    assert not torch.allclose(e[0], e[1])  # the path depends on the input


def test_gradients_reach_the_path():
    ad = make(path_outputs=3).train()
    ad(**inputs()).pow(2).sum().backward()
    assert ad.path.weight.grad.abs().sum() > 0 and ad.path_proj.weight.grad.abs().sum() > 0


def test_a_model_with_the_path_is_built_by_its_own_config():
    ad = make(path_outputs=2)
    again = MSEAdapter(AdapterConfig.from_dict(ad.config.to_dict()))
    assert set(again.state_dict()) == set(ad.state_dict())
