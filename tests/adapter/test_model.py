"""Behaviour of the MSE-Adapter module: shapes, packing, missing modalities, pooling, gradients."""

from __future__ import annotations

import pytest
import torch

from msekit.adapter import AdapterConfig, MSEAdapter
from msekit.errors import MsekitError

D = 64


def make(seed=0, **kw):
    torch.manual_seed(seed)
    args = {"llm_hidden_size": D, "audio_dim": 5, "video_dim": 3, "audio_hidden": 8, "video_hidden": 4} | kw
    return MSEAdapter(AdapterConfig(**args)).eval()


def inputs(B=4, L=6, Ta=10, Tv=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(
        text_embeds=torch.randn(B, L, D, generator=g),
        text_mask=torch.ones(B, L, dtype=torch.bool),
        audio=torch.randn(B, Ta, 5, generator=g),
        audio_lengths=torch.full((B,), Ta),
        video=torch.randn(B, Tv, 3, generator=g),
        video_lengths=torch.full((B,), Tv),
    )


@pytest.mark.parametrize("mode", ["linear1", "full"])
def test_output_shape(mode):
    out = make(pseudo_token_mode=mode, num_pseudo_tokens=3)(**inputs())
    assert out.shape == (4, 3, D)


def test_linear1_tokens_are_rank_one_as_in_the_paper():
    adapter = make()
    out = adapter(**inputs())  # (B, n, d)
    centered = out[0] - adapter.pseudo.bias[:, None]  # each token = w_i * h
    assert torch.linalg.matrix_rank(centered, atol=1e-5) == 1
    full = make(pseudo_token_mode="full")(**inputs())
    assert torch.linalg.matrix_rank(full[0], atol=1e-5) > 1


def test_padding_beyond_the_length_is_ignored():
    adapter = make()
    x = inputs(B=2)
    x["audio_lengths"] = torch.tensor([10, 4])
    x["video_lengths"] = torch.tensor([7, 2])
    padded = adapter(**x)[1]
    x2 = {k: (v[1:2] if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
    x2["audio"], x2["audio_lengths"] = x2["audio"][:, :4], torch.tensor([4])
    x2["video"], x2["video_lengths"] = x2["video"][:, :2], torch.tensor([2])
    assert torch.allclose(adapter(**x2)[0], padded, atol=1e-6)
    x["audio"][1, 4:] = 1e3  # garbage in the padding changes nothing
    assert torch.allclose(adapter(**x)[1], padded, atol=1e-6)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_padding_is_ignored_by_either_sequence_pooling(pooling):
    adapter = make(seq_pooling=pooling)
    x = inputs(B=3)
    x["audio_lengths"] = torch.tensor([10, 4, 7])  # unsorted lengths: the order must survive packing
    out = adapter(**x)
    for r, n in enumerate([10, 4, 7]):
        one = {k: (v[r : r + 1] if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
        one["audio"], one["audio_lengths"] = one["audio"][:, :n], torch.tensor([n])
        assert torch.allclose(adapter(**one)[0], out[r], atol=1e-6)


def test_mean_pooling_is_the_mean_of_the_lstm_outputs_over_real_frames():
    adapter = make(seq_pooling="mean")
    enc = adapter.audio_encoder
    x = torch.randn(2, 9, 5)
    lengths = torch.tensor([9, 3])
    got = enc(x, lengths)  # (B, F)
    for r, n in enumerate(lengths.tolist()):
        outs, _ = enc.lstm(x[r : r + 1, :n])  # (1, n, H)
        assert torch.allclose(got[r], enc.proj(outs.mean(dim=1))[0], atol=1e-6)
    last = make(seq_pooling="last")
    assert last.num_parameters() == adapter.num_parameters()  # same modules, another read-out
    assert not torch.allclose(last.audio_encoder(x, lengths), got, atol=1e-3)


def test_length_zero_means_a_zero_vector_for_that_modality():
    adapter = make()
    x = inputs(B=3)
    x["audio_lengths"] = torch.tensor([10, 0, 0])
    out = adapter(**x)
    x["audio"][1:] = torch.randn(2, 10, 5)  # content of an absent stream does not matter
    assert torch.allclose(adapter(**x)[1:], out[1:])
    no_audio = adapter(**(x | {"audio": None, "audio_lengths": None}))  # whole batch without audio
    assert torch.allclose(no_audio[1:], out[1:], atol=1e-6)
    # both missing: the mixer's output is 0, so the text no longer matters either
    x["video_lengths"] = torch.tensor([7, 0, 0])
    x["text_embeds"][2] += 5.0
    both = adapter(**x)
    assert torch.allclose(both[1], both[2], atol=1e-6)
    # a zero-width padded array (T = 0) is no error either
    empty = adapter(**(x | {"audio": torch.zeros(3, 0, 5), "audio_lengths": torch.zeros(3, dtype=torch.long)}))
    assert torch.isfinite(empty).all()


def test_text_only_adapter():
    adapter = make(audio_dim=0, video_dim=None)
    x = inputs()
    out = adapter(x["text_embeds"], x["text_mask"])
    assert out.shape == (4, 4, D)
    with pytest.raises(MsekitError, match="no audio branch"):
        adapter(x["text_embeds"], x["text_mask"], x["audio"], x["audio_lengths"])


def test_text_pooling_real_tokens_vs_paper():
    x = inputs(B=1, L=4)
    x["text_mask"] = torch.tensor([[False, False, True, True]])
    real, paper = make(), make(text_pooling="mean_all")
    pooled_real = real.pool_text(x["text_embeds"], x["text_mask"])
    assert torch.allclose(pooled_real, x["text_embeds"][:, 2:].mean(1))
    assert torch.allclose(paper.pool_text(x["text_embeds"], x["text_mask"]), x["text_embeds"].mean(1))
    longer = torch.cat([torch.randn(1, 3, D), x["text_embeds"]], dim=1)  # more padding
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.bool), x["text_mask"]], dim=1)
    assert torch.allclose(real.pool_text(longer, mask), pooled_real, atol=1e-6)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"audio_lengths": torch.tensor([11, 1, 1, 1])}, r"audio_lengths must lie in \[0, 10\]"),
        ({"audio": torch.randn(4, 10, 6)}, "audio: feature dim must be 5, received 6"),
        ({"video": torch.randn(3, 7, 3)}, "video: batch size must be 4"),
        ({"text_embeds": torch.randn(4, 6, 32)}, r"text_embeds must be \(B, L, 64\)"),
    ],
)
def test_input_errors_are_clear(change, match):
    with pytest.raises(MsekitError, match=match):
        make()(**(inputs() | change))


def test_gradients_reach_every_parameter():
    adapter = make().train()
    adapter(**inputs()).pow(2).sum().backward()
    for name, p in adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_an_lstm_answering_in_half_precision_is_accepted(pooling):
    """cuDNN runs an LSTM under CUDA autocast in fp16 whatever the autocast dtype; the encoder's
    fp32 state must take that answer (an index_copy of mixed dtypes raised before)."""

    class HalfLSTM(torch.nn.Module):  # the real LSTM, answering the way cuDNN does under autocast
        def __init__(self, lstm):
            super().__init__()
            self.inner, self.input_size, self.hidden_size = lstm, lstm.input_size, lstm.hidden_size

        def forward(self, packed):
            out, (h, c) = self.inner(packed)
            return out._replace(data=out.data.half()), (h.half(), c.half())

    adapter, x = make(seq_pooling=pooling), inputs()
    x["audio_lengths"] = torch.tensor([10, 0, 4, 10])
    ref = adapter(**x)
    for enc in [m for m in adapter.modules() if isinstance(getattr(m, "lstm", None), torch.nn.LSTM)]:
        enc.lstm = HalfLSTM(enc.lstm)
    out = adapter(**x)
    assert out.dtype == ref.dtype and torch.allclose(out, ref, atol=1e-2)


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_lstms_run_in_fp32_under_autocast(amp, pooling):
    """Under autocast the LSTMs run outside it in fp32 (on a GPU: the fused cuDNN kernel, which
    bf16 autocast would miss). Their states equal the fp32 reference to 1e-6; the adapter's
    output differs from it only by the half-precision Linear layers (2% of its largest value)."""
    adapter, x = make(seq_pooling=pooling), inputs(Ta=40, Tv=25)
    x["audio_lengths"], x["video_lengths"] = torch.tensor([40, 0, 17, 3]), torch.tensor([25, 9, 0, 25])
    states = []
    for enc in (adapter.audio_encoder, adapter.video_encoder):
        enc.lstm.register_forward_hook(lambda mod, inp, out: states.append(out[1][0]))
    ref = adapter(**x)
    with torch.autocast("cpu", dtype=amp):
        out = adapter(**x)
    assert [s.dtype for s in states] == [torch.float32] * 4
    for fp32, under_amp in zip(states[:2], states[2:], strict=True):
        assert torch.allclose(fp32, under_amp, atol=1e-6)
    assert out.dtype == amp
    assert torch.allclose(out.float(), ref, atol=2e-2 * ref.abs().max().item())
