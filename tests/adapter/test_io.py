"""Adapter folders: adapter weights only, JSON config, clear mismatch errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from msekit.adapter import AdapterConfig, MSEAdapter, load_adapter, read_adapter_meta, save_adapter
from msekit.errors import MsekitError

META = {
    "base_llm": "smollm2-135m",
    "task": "regression",
    "label_names": None,
    "prompt": "mosei",
    "audio_feature": "egemaps_lld",
    "video_feature": "facemesh",
    "store": {"fps": 10, "sample_rate": 16000},
}


def adapter(d=64, audio=5, video=3, seed=0):
    torch.manual_seed(seed)
    return MSEAdapter(AdapterConfig(llm_hidden_size=d, audio_dim=audio, video_dim=video))


def test_round_trip_gives_the_same_module(tmp_path):
    a = adapter()
    out = save_adapter(tmp_path / "ad", a, META)
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    b, meta = load_adapter(out, llm_hidden_size=64, feature_spec={"audio_dim": 5, "video_feature": "facemesh"})
    assert meta["base_llm"] == "smollm2-135m" and meta["store"] == {"fps": 10, "sample_rate": 16000}
    assert meta["llm_hidden_size"] == 64 and meta["audio_dim"] == 5
    for (k1, v1), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


def test_config_file_is_sorted_indented_json(tmp_path):
    save_adapter(tmp_path, adapter(), META)
    text = (tmp_path / "adapter_config.json").read_text()
    doc = json.loads(text)
    assert text == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert doc["adapter"]["llm_hidden_size"] == 64 and doc["format"] == "msekit-mse-adapter"


def test_weights_are_adapter_only_safetensors(tmp_path):
    a = adapter(d=4096, audio=74, video=35)
    save_adapter(tmp_path, a, META)
    path = tmp_path / "adapter_model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(a.state_dict())
    assert path.stat().st_size < 11e6  # 2.6 M fp32 parameters, ~10.5 MB
    assert path.read_bytes()[:2] != b"\x80\x02"  # not a pickle


def test_width_mismatch_names_both_sides(tmp_path):
    save_adapter(tmp_path, adapter(), META)
    with pytest.raises(MsekitError) as e:
        load_adapter(tmp_path, llm_hidden_size=576)
    assert "llm_hidden_size=64" in str(e.value) and "576" in str(e.value) and "smollm2-135m" in str(e.value)


def test_feature_mismatch_names_both_sides(tmp_path):
    save_adapter(tmp_path, adapter(), META)
    with pytest.raises(MsekitError) as e:
        load_adapter(tmp_path, feature_spec={"audio_dim": 25, "audio_feature": "compare", "video_dim": 3})
    msg = str(e.value)
    assert "audio_dim: adapter trained with 5, given 25" in msg
    assert "audio_feature: adapter trained with 'egemaps_lld', given 'compare'" in msg
    assert "video_dim" not in msg


def test_bad_folders_and_meta(tmp_path):
    with pytest.raises(MsekitError, match="not an adapter folder"):
        load_adapter(tmp_path)
    with pytest.raises(MsekitError, match="reserved"):
        save_adapter(tmp_path, adapter(), {"adapter": 1})
    with pytest.raises(MsekitError, match="JSON-serializable"):
        save_adapter(tmp_path, adapter(), {"x": object()})
    save_adapter(tmp_path, adapter(), META)
    (tmp_path / "adapter_model.safetensors").unlink()
    assert read_adapter_meta(tmp_path)["task"] == "regression"
    with pytest.raises(MsekitError, match="weights missing"):
        load_adapter(tmp_path)
