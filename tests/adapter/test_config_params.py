"""The adapter's architecture matches the paper's to the parameter."""

from __future__ import annotations

import pytest
import torch

from msekit.adapter import AdapterConfig, MSEAdapter, trainable_parameters_line
from msekit.errors import MsekitError

# (audio dim, audio hidden, video dim, video hidden, trainable params of the authors' runs)
PAPER = {
    "mosei": (74, 64, 35, 32, 2_631_692),
    "sims-v2": (25, 64, 177, 64, 2_680_716),
    "meld": (64, 64, 64, 32, 2_632_844),
    "cherma": (1024, 32, 2048, 16, 2_842_380),
}


def paper_config(name: str) -> AdapterConfig:
    a, ah, v, vh, _ = PAPER[name]
    return AdapterConfig(llm_hidden_size=4096, audio_dim=a, audio_hidden=ah, video_dim=v,
                         video_hidden=vh, num_pseudo_tokens=4)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_trainable_parameters_equal_the_authors(name):
    adapter = MSEAdapter(paper_config(name))
    assert adapter.num_parameters(trainable_only=True) == PAPER[name][4]
    assert adapter.get_nb_trainable_parameters() == (PAPER[name][4], PAPER[name][4])


def test_one_line_report_as_peft_prints_it():
    adapter = MSEAdapter(paper_config("mosei"))
    assert trainable_parameters_line(adapter) == (
        "trainable params: 2,631,692 || all params: 2,631,692 || trainable%: 100.0000"
    )
    frozen = torch.nn.Linear(1000, 1000)  # 1,001,000 frozen parameters
    frozen.requires_grad_(False)
    line = trainable_parameters_line((adapter, frozen))
    assert line == "trainable params: 2,631,692 || all params: 3,632,692 || trainable%: 72.4447"


def test_missing_modalities_drop_their_branches():
    full = MSEAdapter(paper_config("mosei")).num_parameters()
    no_audio = MSEAdapter(AdapterConfig(llm_hidden_size=4096, audio_dim=None, video_dim=35))
    lstm = 4 * 64 * (74 + 64) + 8 * 64
    assert no_audio.num_parameters() == full - lstm - (64 * 256 + 256)
    text_only = AdapterConfig(llm_hidden_size=4096, audio_dim=0, video_dim=None)
    assert (text_only.audio_dim, text_only.video_dim, text_only.has_audio) == (0, 0, False)


def test_config_round_trip_and_defaults():
    cfg = paper_config("sims-v2")
    d = cfg.to_dict()
    assert AdapterConfig.from_dict(d) == cfg
    assert (d["fusion_dim"], d["text_pooling"], d["pseudo_token_mode"], d["dropout"]) == (256, "mean_real", "linear1", 0.0)
    assert cfg.msf_hidden_sizes == (512, 128, 256)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"text_pooling": "max"}, ["text_pooling", "mean_real", "mean_all", "'max'"]),
        ({"pseudo_token_mode": "mlp"}, ["pseudo_token_mode", "linear1", "'mlp'"]),
        ({"audio_dim": -3}, ["audio_dim", "-3"]),
        ({"num_pseudo_tokens": 0}, ["num_pseudo_tokens", "0"]),
        ({"dropout": 1.5}, ["dropout", "1.5"]),
        ({"seq_pooling": "max"}, ["seq_pooling", "last", "mean", "'max'"]),
        ({"llm_hidden_size": 16}, ["msf_divisors", "16"]),
    ],
)
def test_config_errors_name_argument_allowed_and_received(kwargs, words):
    args = {"llm_hidden_size": 64, "audio_dim": 5, "video_dim": 3, **kwargs}
    with pytest.raises(MsekitError) as e:
        AdapterConfig(**args)
    for w in words:
        assert w in str(e.value)


def test_from_dict_rejects_unknown_keys():
    d = paper_config("meld").to_dict() | {"lora_rank": 8}
    with pytest.raises(MsekitError, match="lora_rank"):
        AdapterConfig.from_dict(d)


def test_sequence_pooling_defaults_and_older_files():
    """msekit's default reads the LSTMs' mean output; the paper presets and an adapter saved
    before the option existed (no key in its JSON) read the last hidden state."""
    from msekit.train.config import resolve_config

    assert AdapterConfig(llm_hidden_size=64, audio_dim=5).seq_pooling == "mean"
    old = paper_config("mosei").to_dict()
    del old["seq_pooling"]
    assert AdapterConfig.from_dict(old).seq_pooling == "last"
    assert resolve_config(None).adapter.seq_pooling == "mean"
    assert resolve_config("mosei-llama2-7b").adapter.seq_pooling == "last"
    assert resolve_config("ravdess-smollm2-135m").adapter.seq_pooling == "mean"
    assert resolve_config("mosei-llama2-7b", seq_pooling="mean").adapter.seq_pooling == "mean"
