"""The scaled initialisation (msekit.adapter.init): the input shows in the pseudo tokens from step 0."""

from __future__ import annotations

import pytest
import torch

from msekit.adapter import AdapterConfig, MSEAdapter
from msekit.adapter.init import capture_inputs, embedding_rms, scaled_init
from msekit.errors import MsekitError
from tests.adapter.test_model import D, inputs, make


def _spread(tokens):  # (B, n, d) -> mean over (n, d) of the std across samples
    return float(tokens.std(dim=0).mean())


@pytest.mark.parametrize("mode", ["linear1", "full"])
def test_scaled_init_puts_the_input_at_the_embedding_scale(mode):
    ad, x = make(pseudo_token_mode=mode, text_pooling="mean_real"), inputs(B=8)
    n_params = ad.num_parameters()
    with torch.no_grad():
        before = ad(**x)
    gains = scaled_init(ad, x, embed_rms=0.136)
    with torch.no_grad():
        after = ad(**x)  # (B, n, d)
        t = ad.text_proj(ad.pool_text(x["text_embeds"], x["text_mask"]))
        a = ad.audio_encoder(x["audio"], x["audio_lengths"])
    assert ad.num_parameters() == n_params and after.shape == before.shape
    assert float(t.std()) == pytest.approx(1.0, rel=1e-4) and float(a.std()) == pytest.approx(1.0, rel=1e-4)
    assert _spread(after) == pytest.approx(0.136, rel=1e-4) == gains["token_spread"]
    assert after.mean(dim=(0, 1)).abs().max() < 1e-5  # centred on the batch
    # PyTorch's defaults (the paper's) leave the tokens nearly input-independent and far larger
    assert _spread(before) < 0.05 * before.pow(2).mean().sqrt()


def test_paper_init_is_left_alone_and_an_unknown_mode_is_refused():
    assert AdapterConfig(llm_hidden_size=D, audio_dim=5).init == "scaled"
    with pytest.raises(MsekitError, match="init must be one of"):
        AdapterConfig(llm_hidden_size=D, audio_dim=5, init="xavier")


def test_scaled_init_is_deterministic_and_skips_an_absent_modality():
    x = inputs(B=4)
    x["video"], x["video_lengths"] = None, None
    ads = [make(seed=3) for _ in range(2)]
    for ad in ads:
        gains = scaled_init(ad, x, embed_rms=0.5)
    assert "video_proj" not in gains and "audio_proj" in gains
    for p, q in zip(ads[0].state_dict().values(), ads[1].state_dict().values(), strict=True):
        assert torch.equal(p, q)


def test_capture_inputs_and_embedding_rms_on_a_real_tiny_llm():
    from msekit.mllm import MultimodalLLM
    from msekit.prompts import prompt_for_run
    from tests.adapter.tiny import smol_tokenizer, tiny_llm

    llm = tiny_llm("llama")
    weight = llm.get_input_embeddings().weight
    assert embedding_rms(llm, chunk_rows=1000) == pytest.approx(float(weight.float().pow(2).mean().sqrt()), rel=1e-5)
    ad = MSEAdapter(AdapterConfig(llm_hidden_size=weight.shape[1], audio_dim=5, video_dim=0))
    prompt = prompt_for_run(None, "classification", label_names=["neg", "pos"], train_labels=[0, 1])
    model = MultimodalLLM(llm, smol_tokenizer(), ad, prompt)
    batch = {"text": ["a happy day", "so sad"], "audio": torch.randn(2, 7, 5),
             "audio_lengths": torch.tensor([7, 4])}
    got = capture_inputs(model, batch)
    assert got["text_embeds"].shape[:2] == got["text_mask"].shape and got["audio"].shape == (2, 7, 5)
    scaled_init(ad, got, embedding_rms(llm))
    assert _spread(model.encode(batch).detach()) == pytest.approx(embedding_rms(llm), rel=1e-3)
