"""End to end on real media with the real offline LLM (SmolLM2-135M): the adapter learns from
the voice, overfits a handful of samples, and predicts straight from a video file.

The RAVDESS clips (data/ravdess) speak one of two neutral sentences, and their face video is
cut from one unrelated recording at offsets that carry no label information, so held-out
accuracy above a text-only run of the same setup can only come from the acoustic features.
Task: arousal, low (neutral, calm, sad) vs high (angry, happy, fearful, surprised); disgust is
left out as ambiguous. Splits as bundled: train = repetition 1 (26 clips), valid = statement 1
repetition 2 (13), test = statement 2 repetition 2 (13): held out by repetition and statement.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RAVDESS = REPO / "data" / "ravdess"
AROUSAL = {"neutral": "low", "calm": "low", "sad": "low",
           "angry": "high", "happy": "high", "fearful": "high", "surprised": "high"}
# Shared by the voice and the text-only runs: only `modalities` differs.
# The voice is the only non-text modality used: the face video under these clips is cut from an
# unrelated recording, so it can only add noise here (it is extracted and stored all the same).
SETUP = dict(epochs=16, batch_size=8, lr=2e-2, patience=100, label_format="name",
             prompt_text="Arousal of the voice (high or low):", val_loss=False, progress=False,
             seed=1111, modalities=["audio"])


@pytest.fixture(scope="module", autouse=True)
def pinned_threads():
    """Two threads, whatever the machine: the runs below are then the same on every CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def llm():
    from msekit.llm import load_llm

    return load_llm()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """data/ravdess extracted once (face at 5 fps + eGeMAPS functionals), labelled by arousal.

    Utterance functionals (88 statistics of the 25 descriptors) let 26 training clips suffice;
    the frame-level descriptors need far more data for the LSTM to find the same cue.
    """
    from msekit.extract import ExtractConfig, extract

    if not (RAVDESS / "labels.csv").is_file():
        pytest.skip("data/ravdess is missing (bash data/build_samples.sh)")
    tmp = tmp_path_factory.mktemp("ravdess")
    rows = list(csv.DictReader((RAVDESS / "labels.csv").open()))
    keep = [r for r in rows if r["label"] in AROUSAL]
    with (tmp / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "split", "text"])
        for r in keep:
            w.writerow([r["id"], AROUSAL[r["label"]], r["split"], r["text"]])
    videos = [RAVDESS / f"{r['id']}.mp4" for r in keep]
    summary = extract(videos, tmp / "feats.h5", ExtractConfig(fps=5, functionals=True), labels=tmp / "labels.csv",
                      workers=2, progress=False)
    assert summary.ok, summary
    return tmp / "feats.h5"


@pytest.fixture(scope="module")
def av_run(store, llm, tmp_path_factory):
    from msekit.train import resolve_config, train

    out = tmp_path_factory.mktemp("runs") / "av"
    return train(resolve_config(store=str(store), out=str(out), **SETUP), llm=llm[0], tokenizer=llm[1])


def test_learns_from_the_voice_beyond_text_only(store, llm, av_run, tmp_path):
    from msekit.train import resolve_config, train

    text = train(resolve_config(store=str(store), out=str(tmp_path / "text"), **(SETUP | {"modalities": []})),
                 llm=llm[0], tokenizer=llm[1])
    y = np.array([0 if x == "high" else 1 for x in _labels(store, "test")])
    chance = max(np.mean(y == 0), np.mean(y == 1))  # the majority-class rate on the test split
    acc_av, acc_text = av_run.final["test"]["accuracy"], text.final["test"]["accuracy"]
    print(f"held-out test accuracy: voice {acc_av:.3f}, text only {acc_text:.3f}, majority {chance:.3f}")
    # Text only: every test clip speaks the same sentence and no audio/video is read, so the run
    # gives one answer for all of them (one column of the confusion matrix) ...
    text_cols = np.asarray(text.final["test"]["confusion"]).sum(axis=0)
    assert (text_cols > 0).sum() == 1 and acc_text <= chance + 1e-9
    # ... while the voice tells the clips apart: both classes predicted, more of them right.
    av_cols = np.asarray(av_run.final["test"]["confusion"]).sum(axis=0)
    assert (av_cols > 0).sum() == 2 and acc_av > acc_text
    run = av_run.run_dir
    for name in ("loss_curves.png", "confusion_matrix.png", "report.md", "final_metrics.json"):
        assert (run / name).is_file(), name
    probe = json.loads((run / "final_metrics.json").read_text())["baseline"]
    print(f"linear probe on utterance means: test accuracy {probe['test']['accuracy']:.3f}")
    assert probe["model"].startswith("logistic regression") and "probe test" in (run / "report.md").read_text()


@pytest.fixture(scope="module")
def frame_store(tmp_path_factory) -> Path:
    """data/ravdess as `msekit extract` makes it by default (native frame rate: eGeMAPS
    descriptors at 100 Hz, ~374 frames a clip, and face AUs), labelled by data/ravdess/arousal.csv."""
    from msekit.extract import ExtractConfig, extract

    if not (RAVDESS / "arousal.csv").is_file():
        pytest.skip("data/ravdess is missing (bash data/build_samples.sh)")
    ids = [r["id"] for r in csv.DictReader((RAVDESS / "arousal.csv").open())]
    out = tmp_path_factory.mktemp("frames") / "feats.h5"
    summary = extract([RAVDESS / f"{i}.mp4" for i in ids], out, ExtractConfig(), labels=RAVDESS / "arousal.csv",
                      workers=2, progress=False)
    assert summary.ok, summary
    return out


def test_default_recipe_on_frame_level_features_matches_the_probe(frame_store, llm, tmp_path):
    """Issue 9, item 8: `msekit train STORE` with no other option (lr 5e-3, the LSTMs' outputs
    averaged over the frames) on the default store of 26 training clips is, on the 26 held-out
    clips (valid + test), at least as accurate as the linear probe less two clips (measured:
    23-26 right against the probe's 22, seeds 1111-3333). With the paper's last-state read-out
    at the old default lr 5e-4 the same run answered the majority class (16 of 26)."""
    from msekit.train import resolve_config, train

    res = train(resolve_config(store=str(frame_store), out=str(tmp_path / "run"), progress=False, report=False),
                llm=llm[0], tokenizer=llm[1])
    cfg = json.loads((res.run_dir / "train_config.json").read_text())
    assert (cfg["lr"], cfg["adapter"]["seq_pooling"]) == (5e-3, "mean")  # the plain defaults
    final = json.loads((res.run_dir / "final_metrics.json").read_text())
    n = {s: final["splits"][s]["n"] for s in ("valid", "test")}
    assert n == {"valid": 13, "test": 13}

    def right(metrics):  # correct answers over valid + test
        return sum(round(metrics[s]["accuracy"] * n[s]) for s in n)

    adapter, probe = right(final["splits"]), right(final["baseline"])
    print(f"held-out clips right: adapter {adapter}/26, linear probe {probe}/26")
    assert adapter >= probe - 2


def test_overfits_a_handful_of_samples(store, llm, tmp_path):
    """Four training samples, two of each class: their labels are reproduced within the budget
    (60 epochs of one optimizer step each; no loss threshold on the noisy curve)."""
    from msekit.store import StoreReader, StoreWriter
    from msekit.train import resolve_config, train

    small = tmp_path / "four.h5"
    with StoreReader(store) as r:
        names = {m: r.feature_names(m) for m in r.modalities}
        split, label = r.column("split"), r.column("label")
        picked = [i for c in ("high", "low")
                  for i in [k for k in range(len(r)) if split[k] == "train" and label[k] == c][::5][:2]]
        assert sorted(label[i] for i in picked) == ["high", "high", "low", "low"]
        with StoreWriter(small, r.settings, names) as w:
            for split in ("train", "valid"):
                for i in picked:
                    s = r.sample(i)
                    s.id, s.split = f"{s.id}-{split}", split
                    w.add(s)
            w.commit()
    res = train(resolve_config(store=str(small), out=str(tmp_path / "fit"), **(SETUP | {"epochs": 60})),
                llm=llm[0], tokenizer=llm[1])
    valid = [r for r in map(json.loads, (tmp_path / "fit/metrics.jsonl").read_text().splitlines())
             if r["kind"] == "valid"]
    # the valid split is the same four clips: every label reproduced, at some epoch of the budget
    assert max(r["accuracy"] for r in valid) == 1.0, [r["accuracy"] for r in valid]
    assert res.final["valid"]["accuracy"] == 1.0 and res.final["valid"]["n"] == 4


def test_predict_and_evaluate_from_the_cli(store, av_run, tmp_path):
    """`msekit predict` on a video file (extracted with the recorded settings) agrees with the
    prediction for the same clip from the store; `msekit evaluate` names its convention."""
    from typer.testing import CliRunner

    from msekit.cli import app

    runner = CliRunner()
    clip = "ravdess_03-01-05-02-02-02-05"  # angry, a test clip
    (tmp_path / "t.csv").write_text(f"id,text\n{clip},Dogs are sitting by the door\n")
    res = runner.invoke(app, ["predict", str(av_run.run_dir), str(RAVDESS / f"{clip}.mp4"), "--transcripts",
                              str(tmp_path / "t.csv"), "--json", "-", "-q"])
    assert res.exit_code == 0, res.output
    video = json.loads(res.stdout[res.stdout.index("{"):])
    res = runner.invoke(app, ["predict", str(av_run.run_dir), str(store), "--split", "test", "--csv",
                              str(tmp_path / "p.csv"), "-q"])
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in csv.DictReader((tmp_path / "p.csv").open())}
    row = video["predictions"][0]
    assert row["id"] == clip and row["prediction"] in ("high", "low")
    assert abs(row["p_high"] + row["p_low"] - 1) < 1e-3
    assert row["prediction"] == rows[clip]["prediction"]
    assert abs(row["p_high"] - float(rows[clip]["p_high"])) < 0.02
    res = runner.invoke(app, ["evaluate", str(av_run.run_dir), str(store), "--split", "test", "--json", "-", "-q"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout[res.stdout.index("{"):])
    assert m["convention"] == "classification" and m["n"] == 13
    assert m["accuracy"] == pytest.approx(av_run.final["test"]["accuracy"])
    gen = runner.invoke(app, ["evaluate", str(av_run.run_dir), str(store), "--decode", "generate", "--json", "-", "-q"])
    assert gen.exit_code == 0, gen.output
    g = json.loads(gen.stdout[gen.stdout.index("{"):])
    # unparsable answers are counted, never guessed: each generated answer is read back by
    # parse_class, and evaluate counts exactly the answers predict leaves empty
    res = runner.invoke(app, ["predict", str(av_run.run_dir), str(store), "--split", "test", "--decode",
                              "generate", "--json", "-", "-q"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    from msekit.parsing import parse_class

    for r in doc["predictions"]:
        k = parse_class(r["answer"], doc["label_names"])  # label_format "name"
        assert r["prediction"] == (None if k < 0 else doc["label_names"][k])
    assert g["unparsed"] == doc["unparsed"] == sum(r["prediction"] is None for r in doc["predictions"])


def _labels(store: Path, split: str) -> list[str]:
    from msekit.store import StoreReader

    with StoreReader(store) as r:
        return [lab for lab, s in zip(r.column("label"), r.column("split"), strict=True) if s == split]
