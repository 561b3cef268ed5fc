"""Stored token ids are used exactly when the store's tokenizer is the training LLM's."""

from __future__ import annotations

import numpy as np

from msekit.dataset import StoreDataset
from msekit.llm import DEFAULT_LLM, load_text_encoder, load_tokenizer
from msekit.store import Modality, Sample, StoreWriter
from msekit.tokenfp import fingerprint, use_stored_token_ids


def _store(path, fp: str | None, stored_ids: list[int]):
    settings = {"extract": {"synthetic": True}, "sample_rate": 16000}
    if fp is not None:
        settings["tokenizer"] = {"name": DEFAULT_LLM, "fingerprint": fp}
    with StoreWriter(path, settings, {"audio": ["a0", "a1"]}) as w:
        for i, split in enumerate(["train", "train", "valid"]):
            a = np.full((3, 2), float(i), np.float32)
            w.add(Sample(id=f"s{i}", text="a short sentence", split=split, label="pos" if i else "neg",
                         token_ids=np.asarray(stored_ids, np.int32),
                         modalities={"audio": Modality(a, np.stack([np.arange(3), np.arange(3) + 1], 1) / 100,
                                                       np.ones(3, bool))}))
        w.commit()
    return path


def test_the_extraction_encoder_and_the_training_tokenizer_have_one_fingerprint():
    tok = load_tokenizer(DEFAULT_LLM)
    enc = load_text_encoder(DEFAULT_LLM)  # the `tokenizers` path extraction takes
    train_side = fingerprint(lambda t: tok(t, add_special_tokens=False)["input_ids"])
    assert fingerprint(enc.encode) == train_side
    # a tokenizer that cuts text differently has another fingerprint
    assert fingerprint(lambda t: tok(t.lower(), add_special_tokens=False)["input_ids"]) != train_side


def test_matching_fingerprint_hands_out_the_stored_ids(tmp_path):
    def encode(t):
        return [7, 8, 9]  # the "model" tokenizer: anything but the stored ids

    store = _store(tmp_path / "s.h5", fingerprint(encode), stored_ids=[101, 102])
    ds = StoreDataset(store, "train")
    notes: list[str] = []
    assert use_stored_token_ids(store, {"tokenizer": {"fingerprint": fingerprint(encode)}}, encode,
                                "m", [ds], notes.append)
    batch = ds.collate(ds.__getitems__([0, 1]))
    assert batch["text_ids"] == [[101, 102], [101, 102]] and notes == []
    assert ds.collate([ds[0], ds[1]])["text_ids"] == [[101, 102], [101, 102]]  # item path too


def test_another_tokenizer_re_tokenizes_with_a_notice(tmp_path):
    store = _store(tmp_path / "s.h5", "0123456789abcdef", stored_ids=[101, 102])
    ds = StoreDataset(store, "train")
    notes: list[str] = []
    used = use_stored_token_ids(store, {"tokenizer": {"name": "x", "fingerprint": "0123456789abcdef"}},
                                lambda t: [1], "m", [ds], notes.append)
    assert not used and "tokenized again" in notes[0]
    assert "text_ids" not in ds.collate(ds.__getitems__([0, 1]))


def test_the_model_takes_stored_ids_when_the_batch_has_them():
    from msekit.adapter import AdapterConfig, MSEAdapter
    from msekit.mllm import MultimodalLLM
    from msekit.prompts import get_prompt
    from tests.adapter.tiny import smol_tokenizer, tiny_llm

    tok = smol_tokenizer()
    adapter = MSEAdapter(AdapterConfig(llm_hidden_size=64, audio_dim=2, video_dim=2))
    model = MultimodalLLM(tiny_llm("llama"), tok, adapter, get_prompt("mosei"), max_text_tokens=3)
    assert model._text_ids(["x"], [[5, 6, 7, 8]]) == [[5, 6, 7]]  # cut to 3
    assert model._text_ids(["hello"]) == [tok("hello", add_special_tokens=False)["input_ids"][:3]]
    assert model.tokenizer_fingerprint() == fingerprint(load_text_encoder(DEFAULT_LLM).encode)


def test_extract_records_its_tokenizer_and_training_uses_its_ids(tmp_path):
    """End to end: a real extraction (fake face/voice backends, real tokenizer) records the
    fingerprint; a StoreDataset for the default LLM then hands out ids equal to tokenizing anew."""
    import shutil
    from pathlib import Path

    import tests.extract.fakes  # noqa: F401  (registers fakeface / fakeaudio)
    from msekit.extract import ExtractConfig, extract
    from msekit.store import StoreReader

    clip = sorted((Path(__file__).resolve().parents[1] / "data" / "ravdess").glob("*.mp4"))[0]
    (tmp_path / "v").mkdir()
    shutil.copy(clip, tmp_path / "v" / "clip.mp4")
    (tmp_path / "t.csv").write_text("id,text\nclip,Kids are talking by the door\n")
    out = tmp_path / "s.h5"
    extract([tmp_path / "v"], out, ExtractConfig(face="fakeface", audio="fakeaudio", fps=5, asr="none"),
            transcripts=tmp_path / "t.csv", progress=False)
    tok = load_tokenizer(DEFAULT_LLM)

    def encode(t):
        return tok(t, add_special_tokens=False)["input_ids"]

    with StoreReader(out) as r:
        settings = r.settings
    assert settings["tokenizer"]["fingerprint"] == fingerprint(encode)
    ds = StoreDataset(out)
    assert use_stored_token_ids(out, settings, encode, DEFAULT_LLM, [ds], print)
    assert ds.collate([ds[0]])["text_ids"] == [encode("Kids are talking by the door")]
