"""`msekit train`, `evaluate` and `predict` as a user types them (the installed executable in a
subprocess), and the Python API behind them, on a tiny local LLM folder and synthetic stores."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from msekit.errors import MsekitError
from tests.train.helpers import make_store, no_nan_json, tiny_llm_dir

EXE = Path(sys.executable).parent / "msekit"


def _msekit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def _one_line_error(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory) -> Path:
    return tiny_llm_dir(tmp_path_factory.mktemp("llm") / "tiny-llama")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, llm_dir):
    """`msekit train STORE --llm <folder>` with no --out, run in a scratch folder."""
    work = tmp_path_factory.mktemp("work")
    store = make_store(work / "feats.h5", n_per_split=(8, 4, 4))
    res = _msekit("train", str(store), "--llm", str(llm_dir), "--epochs", "2", "--batch-size", "2",
                  "--lr", "0.01", "-q", cwd=work)
    assert res.returncode == 0, res.stderr
    return work, store, res


def test_train_as_typed_picks_and_prints_the_run_folder(trained):
    work, _, res = trained
    assert "run folder: runs/feats-tiny-llama" in res.stdout
    run = work / "runs/feats-tiny-llama"
    assert (run / "adapter/adapter_config.json").is_file() and (run / "final_metrics.json").is_file()
    no_nan_json((run / "final_metrics.json").read_text())


def test_train_user_errors_are_one_line(tmp_path, llm_dir):
    store = make_store(tmp_path / "s.h5", n_per_split=(4, 2, 2))
    _one_line_error(_msekit("train", str(tmp_path / "missing.h5"), "--llm", str(llm_dir)), "missing.h5")
    _one_line_error(_msekit("train", str(store), "--task", "regression", "--labels", "neg,pos"), "--labels")
    _one_line_error(_msekit("train", str(store), "--labels", "neg"), "at least two")
    _one_line_error(_msekit("train", str(store), "--seeds", "one,two"), "--seeds")
    _one_line_error(_msekit("train", str(store), "--ratios", "a,b,c"), "--ratios")
    if not __import__("torch").cuda.is_available():
        _one_line_error(_msekit("train", str(store), "--device", "cuda"), "--device cuda", "CUDA")
    usage = _msekit("train", str(store), "--epochz", "3")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_train_help_lists_every_config_field_with_its_default():
    from dataclasses import fields

    from msekit.adapter.config import AdapterConfig
    from msekit.train.config import ADAPTER_DERIVED, TrainConfig

    res = subprocess.run([str(EXE), "train", "--help"], capture_output=True, text=True,
                         env=dict(os.environ, COLUMNS="200"))
    assert res.returncode == 0
    text = res.stdout
    names = [f.metadata.get("flag") or "--" + f.name.replace("_", "-") for f in fields(TrainConfig)
             if f.metadata.get("cli") is not False]
    names += [f.metadata.get("flag") or "--" + f.name.replace("_", "-") for f in fields(AdapterConfig)
              if f.name not in ADAPTER_DERIVED]
    missing = [n for n in names if n not in text]
    assert not missing, missing
    assert "--audio-hidden" in text and "(64)" in text.split("--audio-hidden", 1)[1].split("\n")[0]


def test_evaluate_accepts_the_run_folder_json_without_nan_and_seconds_as_is(trained):
    work, store, _ = trained
    run = work / "runs/feats-tiny-llama"
    res = _msekit("evaluate", str(run), str(store), "--json", "-", "-q")
    assert res.returncode == 0, res.stderr
    m = no_nan_json(res.stdout)
    final = json.loads((run / "final_metrics.json").read_text())["splits"]["test"]
    assert m["accuracy"] == pytest.approx(final["accuracy"]) and m["undefined"] == 0
    table = _msekit("evaluate", str(run), str(store), "-q")
    assert table.returncode == 0 and "Accuracy" in table.stdout and "seconds" in table.stdout
    from msekit.report import metrics_markdown

    md = metrics_markdown({"test": {"convention": "classification", "accuracy": 0.5, "seconds": 0.94}})
    assert "| Accuracy | 50.00 |" in md and "| seconds | 0.9400 |" in md  # seconds not x 100


def test_predict_writes_csv_and_json_for_a_store(trained, tmp_path):
    import msekit

    work, store, _ = trained
    run = work / "runs/feats-tiny-llama"
    res = _msekit("predict", str(run), str(store), "--split", "test", "--csv", str(tmp_path / "p.csv"),
                  "--json", str(tmp_path / "p.json"), "-q")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    doc = no_nan_json((tmp_path / "p.json").read_text())
    assert [r["id"] for r in rows] == [p["id"] for p in doc["predictions"]] and len(rows) == 4
    assert set(rows[0]) == {"id", "prediction", "p_neg", "p_pos"}
    for r in rows:
        assert r["prediction"] in ("neg", "pos") and abs(float(r["p_neg"]) + float(r["p_pos"]) - 1) < 2e-4
    assert doc["failed"] == [] and doc["n"] == 4
    pred = msekit.predict(run, [store], split="test")  # the Python API takes the run folder too
    assert [pred.label_names[int(k)] for k in pred.values] == [r["prediction"] for r in rows]


def test_predict_many_videos_keeps_the_good_ones(tmp_path, llm_dir):
    """One bad video among good ones: predictions for the good, one line for the bad, exit 1."""
    import shutil

    import tests.extract.fakes  # noqa: F401  registers the fast 'fakeface' / 'fakeaudio' backends
    from msekit.extract import ExtractConfig, extract
    from msekit.predict import load_run, predict

    fix = Path(__file__).resolve().parents[1] / "fixtures"
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(4):
        shutil.copy(fix / "single_face.mp4", clips / f"c{i}.mp4")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label,split\n" + "".join(f"c{i},{'neg' if i % 2 else 'pos'},{s}\n"
                                                   for i, s in enumerate(("train", "train", "valid", "test"))))
    store = tmp_path / "s.h5"
    assert extract([clips], store, ExtractConfig(face="fakeface", audio="fakeaudio", fps=5, llm="none"),
                   labels=labels, progress=False).ok
    from msekit.train import resolve_config, train

    train(resolve_config(store=str(store), out=str(tmp_path / "run"), llm=str(llm_dir), epochs=1,
                         batch_size=2, progress=False, report=False))
    run = load_run(tmp_path / "run")
    pred = predict(run, [fix / "single_face.mp4", fix / "corrupt.mp4"])
    assert pred.ids == ["single_face"] and len(pred.failures) == 1
    assert pred.failures[0]["path"].endswith("corrupt.mp4")
    with pytest.raises(MsekitError, match="no such store"):
        predict(run, [tmp_path / "nope.h5"])
    from typer.testing import CliRunner

    from msekit.cli import app

    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), str(fix / "single_face.mp4"),
                                   str(fix / "corrupt.mp4"), "--json", "-", "-q"])
    assert res.exit_code == 1
    assert json.loads(res.stdout[res.stdout.index("{"):])["predictions"][0]["id"] == "single_face"
    errors = [x for x in res.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "corrupt.mp4" in errors[0]


def test_multi_seed_run_from_the_command_line_and_its_evaluation(tmp_path, llm_dir):
    store = make_store(tmp_path / "s.h5", n_per_split=(4, 2, 2))
    out = tmp_path / "ms"
    res = _msekit("train", str(store), "--llm", str(llm_dir), "--out", str(out), "--seeds", "11,22",
                  "--epochs", "1", "--batch-size", "2", "--no-baseline")
    assert res.returncode == 0, res.stderr
    assert "mean ± std" in res.stdout and f"{out}/summary.json" in res.stdout
    doc = no_nan_json((out / "summary.json").read_text())
    assert doc["seeds"] == [11, 22] and set(doc["splits"]) == {"valid", "test"}
    ev = _msekit("evaluate", str(out), str(store), "--json", "-", "-q")
    assert ev.returncode == 0, ev.stderr
    m = no_nan_json(ev.stdout)
    assert m["n_seeds"] == 2 and sorted(m["seeds"]) == ["11", "22"]
    assert m["mean"]["accuracy"] == pytest.approx(doc["splits"]["test"]["mean"]["accuracy"])
