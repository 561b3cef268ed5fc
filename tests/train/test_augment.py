"""Input noise: only on real frames, reproducible per micro-batch, and wired into training."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from msekit.errors import MsekitError
from msekit.train import resolve_config, train
from msekit.train.augment import add_input_noise, noise_generator
from tests.train.helpers import make_store, tiny_llm


def _batch() -> dict:
    torch.manual_seed(0)
    return {"audio": torch.zeros(3, 5, 4), "audio_lengths": torch.tensor([5, 2, 0]),
            "video": torch.ones(3, 2, 2), "video_lengths": torch.tensor([1, 2, 2]), "text": ["a", "b", "c"]}


def test_noise_lands_on_real_frames_only():
    b = _batch()
    out = add_input_noise(b, 0.5, noise_generator(1111, 0, 0))
    a = out["audio"]  # (3, 5, 4)
    assert (a[0] != 0).all() and (a[1, :2] != 0).all()
    assert (a[1, 2:] == 0).all() and (a[2] == 0).all()  # padding and an absent sample stay zero
    v = out["video"]
    assert (v[0, 1] == 1).all() and (v[0, 0] != 1).all()
    assert out["text"] is b["text"] and (b["audio"] == 0).all()  # the input batch is not modified


def test_noise_scale_and_reproducibility():
    x = {"audio": torch.zeros(4, 50, 100), "audio_lengths": torch.full((4,), 50)}
    a = add_input_noise(x, 0.3, noise_generator(7, 2, 3))["audio"]
    assert abs(float(a.std()) - 0.3) < 0.01  # 20,000 draws: the std's own error is ~0.0015
    again = add_input_noise(x, 0.3, noise_generator(7, 2, 3))["audio"]
    other = add_input_noise(x, 0.3, noise_generator(7, 2, 4))["audio"]
    rank1 = add_input_noise(x, 0.3, noise_generator(7, 2, 3, rank=1))["audio"]
    assert torch.equal(a, again) and not torch.equal(a, other) and not torch.equal(a, rank1)
    assert add_input_noise(x, 0.0, noise_generator(7, 2, 3)) is x


def test_noise_changes_training_and_bad_values_are_refused(tmp_path):
    store = make_store(tmp_path / "tiny.h5", n_per_split=(8, 4, 4))
    weights = {}
    for noise in (0.0, 0.5):
        llm, tok = tiny_llm()
        cfg = resolve_config(store=str(store), out=str(tmp_path / f"n{noise}"), epochs=1, batch_size=4,
                             lr=1e-2, input_noise=noise, progress=False, report=False, baseline=False)
        train(cfg, llm=llm, tokenizer=tok)
        weights[noise] = load_file(tmp_path / f"n{noise}" / "adapter/adapter_model.safetensors")
    diff = max(float((weights[0.0][k] - weights[0.5][k]).abs().max()) for k in weights[0.0])
    assert diff > 0
    with pytest.raises(MsekitError, match="input_noise"):
        resolve_config(input_noise=-0.1)
