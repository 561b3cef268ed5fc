"""The trainer's blind spots on a tiny random LLM and synthetic stores: regression end to end,
early stopping, class subsets, grad_accum + resume, one DataLoader per epoch, the optimizer's
parameters, one normalization shared with prediction, corrupt checkpoints, label refusals,
automatic splits, multi-seed runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from msekit.errors import MsekitError
from msekit.train import resolve_config, train, train_seeds
from tests.train.helpers import make_store, no_nan_json, tiny_llm


@pytest.fixture(scope="module")
def llm():
    return tiny_llm()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("cls") / "cls.h5", n_per_split=(8, 4, 4))


def _cfg(store: Path, out: Path, **kw):
    return resolve_config(**(dict(store=str(store), out=str(out), epochs=2, batch_size=2, lr=1e-2,
                                  progress=False, report=False) | kw))


def _run(llm, store: Path, out: Path, **kw):
    return train(_cfg(store, out, **kw), llm=llm[0], tokenizer=llm[1])


def test_regression_end_to_end_writes_valid_json(llm, tmp_path):
    store = make_store(tmp_path / "reg.h5", n_per_split=(8, 4, 4), regression=True)
    res = _run(llm, store, tmp_path / "r", report=True)
    assert set(res.final) == {"valid", "test"}
    assert res.metric == "mae"
    doc = no_nan_json((tmp_path / "r/final_metrics.json").read_text())
    for split in ("valid", "test"):
        m = doc["splits"][split]
        # every undefined metric (e.g. Corr of a constant prediction, MAE when no answer of the
        # random tiny LLM parses) is null, and counted
        assert m["undefined"] == sum(v is None for v in m.values())
        assert m["n"] + m["unparsed"] == 4 and m["convention"] == "mosei"
    assert doc["baseline"]["model"].startswith("ridge regression") and "mae" in doc["baseline"]["test"]
    report = (tmp_path / "r/report.md").read_text()
    assert "probe test" in report
    # the verdict line is there exactly when both MAEs are defined
    assert ("Verdict: the " in report) == (doc["splits"]["test"]["mae"] is not None)
    cfg = json.loads((tmp_path / "r/train_config.json").read_text())
    assert cfg["task"] == "regression" and cfg["adapter"]["llm_hidden_size"] == 64
    assert cfg["split"] == {"made_by": "store"}


def test_early_stopping_ends_the_run_after_patience(llm, store, tmp_path):
    # lr 0: the adapter never changes, so the validation metric never improves after epoch 0
    res = _run(llm, store, tmp_path / "es", epochs=10, patience=2, lr=0.0)
    assert res.stopped_early and res.epochs_run == 3 and res.best_epoch == 0
    valid = [json.loads(x) for x in (tmp_path / "es/metrics.jsonl").read_text().splitlines()]
    assert [r["best"] for r in valid if r["kind"] == "valid"] == [True, False, False]


def test_keep_last_runs_every_epoch_and_keeps_the_last(llm, store, tmp_path):
    # the same frozen adapter as above: with keep=best patience 1 would stop after epoch 1
    res = _run(llm, store, tmp_path / "last", epochs=4, patience=1, lr=0.0, keep="last")
    assert not res.stopped_early and res.epochs_run == 4 and res.best_epoch == 3
    doc = json.loads((tmp_path / "last/final_metrics.json").read_text())
    assert doc["best_epoch"] == 3
    with pytest.raises(MsekitError, match="keep must be one of"):
        _cfg(store, tmp_path / "bad", keep="final")


def test_class_subset_trains_on_the_named_classes_only(llm, tmp_path):
    store = make_store(tmp_path / "three.h5", n_per_split=(9, 6, 6), classes=("neg", "neu", "pos"))
    res = _run(llm, store, tmp_path / "sub", label_names=["pos", "neg"], epochs=1)
    cfg = json.loads((tmp_path / "sub/train_config.json").read_text())
    assert cfg["label_names"] == ["pos", "neg"]  # index order as given
    assert res.final["valid"]["n"] == 4 and len(res.final["valid"]["per_class"]) == 2
    with pytest.raises(MsekitError, match="at least two distinct classes"):
        _run(llm, store, tmp_path / "one", label_names=["neg"])
    with pytest.raises(MsekitError, match="--task is regression"):
        _run(llm, store, tmp_path / "reg", label_names=["neg", "pos"], task="regression")


def test_one_class_store_is_refused_before_training(llm, tmp_path):
    store = make_store(tmp_path / "mono.h5", n_per_split=(4, 2, 2), classes=("neg",))
    with pytest.raises(MsekitError, match=r"holds 1 class\(es\)"):
        _run(llm, store, tmp_path / "mono")
    assert not (tmp_path / "mono").exists()  # refused before the run folder was made


def test_grad_accum_resume_matches_the_uninterrupted_run(llm, store, tmp_path):
    full = _run(llm, store, tmp_path / "full", grad_accum=3)  # 4 micro-batches: steps of 3 + 1
    assert full.global_step == 4
    part = _run(llm, store, tmp_path / "part", grad_accum=3, checkpoint_every=1, stop_after=3)
    assert part.interrupted
    state = json.loads((tmp_path / "part/checkpoint/trainer_state.json").read_text())
    assert (state["epoch"], state["micro_in_epoch"]) == (1, 3)  # mid-epoch, before the short last step
    resumed = _run(llm, store, tmp_path / "part", grad_accum=3, checkpoint_every=1)
    assert resumed.global_step == 4
    a, b = load_file(tmp_path / "full/adapter/adapter_model.safetensors"), \
        load_file(tmp_path / "part/adapter/adapter_model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0


def test_one_dataloader_per_epoch_and_adapter_only_optimizer(llm, store, tmp_path, monkeypatch):
    from torch.utils.data import DataLoader

    from msekit.train import loop

    made = []
    init = DataLoader.__init__

    def counting(self, dataset, *a, **kw):
        if kw.get("batch_sampler") is not None:  # the training loaders
            made.append(len(kw["batch_sampler"]))
        init(self, dataset, *a, **kw)

    monkeypatch.setattr(DataLoader, "__init__", counting)
    t = loop.setup(_cfg(store, tmp_path / "dl", epochs=3), llm[0], llm[1])
    opt = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert opt == {id(p) for p in t.adapter.parameters()}
    assert not opt & {id(p) for p in llm[0].parameters()}
    while t.state["epoch"] < 3:
        loop.train_epoch(t)
        loop.validate_and_checkpoint(t)
    assert made == [4, 4, 4]  # one loader per epoch over its 4 micro-batches


def test_prediction_reads_exactly_what_training_read(llm, store, tmp_path):
    from msekit.dataset import StoreDataset
    from msekit.predict import load_run

    res = _run(llm, store, tmp_path / "n", epochs=1, modalities=["audio"])
    run = load_run(res.run_dir, llm=llm[0], tokenizer=llm[1])
    view = run.view()
    assert view.modalities == ["audio"] and set(view.norm) == {"audio"}
    trained = StoreDataset(store, "test", view)
    from msekit.train.data import load_run_data

    data = load_run_data(_cfg(store, tmp_path / "unused", modalities=["audio"]))
    a = trained.collate(trained.__getitems__([0, 1, 2]))
    b = data.test.collate(data.test.__getitems__([0, 1, 2]))
    assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["video_lengths"], b["video_lengths"])
    assert int(a["video_lengths"].sum()) == 0  # video left out in training: missing in prediction
    assert abs(float(a["audio"][a["audio"] != 0].mean())) < 1.5  # standardized, not raw (shift 2)


def test_truncated_checkpoint_names_the_file_and_the_way_out(llm, store, tmp_path):
    _run(llm, store, tmp_path / "c", checkpoint_every=1, stop_after=2)
    opt = tmp_path / "c/checkpoint/optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:100])
    with pytest.raises(MsekitError) as e:
        _run(llm, store, tmp_path / "c", checkpoint_every=1)
    msg = str(e.value)
    assert "optimizer.safetensors" in msg and "--no-resume" in msg and "\n" not in msg
    res = _run(llm, store, tmp_path / "c", checkpoint_every=1, resume=False, overwrite=True)
    assert res.global_step == 8


def test_store_without_splits_gets_a_recorded_grouped_split(llm, tmp_path):
    from msekit.store import StoreReader, StoreWriter

    src = make_store(tmp_path / "s.h5", n_per_split=(12, 4, 4))
    flat = tmp_path / "flat.h5"
    with StoreReader(src) as r, StoreWriter(flat, r.settings, {m: r.feature_names(m) for m in r.modalities}) as w:
        for i in range(len(r)):
            s = r.sample(i)
            s.split = ""
            w.add(s)
        w.commit()
    notes = []
    from msekit.train.data import load_run_data

    data = load_run_data(_cfg(flat, tmp_path / "x", ratios=[0.6, 0.2, 0.2]), notes.append)
    assert len(notes) == 1 and "grouped split with seed 0" in notes[0] and "over 20 groups" in notes[0]
    assert (len(data.train), len(data.valid), len(data.test)) == (12, 4, 4)
    res = _run(llm, flat, tmp_path / "auto", epochs=1, ratios=[0.6, 0.2, 0.2], split_seed=3)
    cfg = json.loads((tmp_path / "auto/train_config.json").read_text())
    assert cfg["split"]["made_by"] == "msekit train" and cfg["split"]["seed"] == 3
    meta = json.loads((tmp_path / "auto/adapter/adapter_config.json").read_text())
    assert meta["view"]["split_seed"] == 3  # evaluate / predict find the same test split
    assert res.final["test"]["n"] + res.final["test"]["unparsed"] == cfg["split"]["test"]


def test_multi_seed_run_summarizes_and_resumes(llm, store, tmp_path):
    cfg = _cfg(store, tmp_path / "ms", epochs=1, seeds=[7, 8])
    res = train_seeds(cfg, llm=llm[0], tokenizer=llm[1])
    assert sorted(p.name for p in (tmp_path / "ms").glob("seed-*")) == ["seed-7", "seed-8"]
    doc = no_nan_json((tmp_path / "ms/summary.json").read_text())
    acc = [json.loads((tmp_path / f"ms/seed-{s}/final_metrics.json").read_text())["splits"]["test"]["accuracy"]
           for s in (7, 8)]
    assert doc["seeds"] == [7, 8] and doc["splits"]["test"]["mean"]["accuracy"] == pytest.approx(np.mean(acc))
    assert doc["splits"]["test"]["std"]["accuracy"] == pytest.approx(np.std(acc))
    assert "± " in (tmp_path / "ms/summary.md").read_text()
    before = (tmp_path / "ms/seed-7/final_metrics.json").stat().st_mtime_ns
    again = train_seeds(cfg, llm=llm[0], tokenizer=llm[1])  # finished seeds are not retrained
    assert (tmp_path / "ms/seed-7/final_metrics.json").stat().st_mtime_ns == before
    assert again.summary["splits"]["test"]["mean"] == res.summary["splits"]["test"]["mean"]


def test_the_linear_path_starts_as_the_probe_and_only_the_demo_preset_has_it(llm, store, tmp_path):
    from msekit.baseline import fit_probe
    from msekit.train.config import load_presets
    from msekit.train.loop import _pool_means, setup

    t = setup(_cfg(store, tmp_path / "p", epochs=1, linear_path=True), llm=llm[0], tokenizer=llm[1])
    ad, data = t.adapter, t.data
    assert ad.config.path_outputs == len(data.label_names) == 2
    means = _pool_means(ad, data)  # (N, Da + Dv)
    y = np.array([data.train.labels[i] for i in data.pool])
    want = fit_probe(means, y, "classification").predict_proba(means)  # the probe, fitted apart
    with torch.no_grad():
        got = ad.path_evidence(torch.as_tensor(means)).numpy()
    assert np.abs(got - want).max() < 1e-4
    saved = json.loads((tmp_path / "p/train_config.json").read_text())["adapter"]
    assert saved["linear_path"] is True and saved["path_outputs"] == 2
    assert resolve_config("ravdess-smollm2-135m").adapter.linear_path is True  # the demo preset's
    paper = [p for p in load_presets()["presets"] if p != "ravdess-smollm2-135m"]
    assert len(paper) > 5 and not any(resolve_config(p).adapter.linear_path for p in paper)  # the authors'
    assert resolve_config().adapter.linear_path is False  # plain defaults
    off = setup(_cfg(store, tmp_path / "q", epochs=1), llm=llm[0], tokenizer=llm[1])
    assert off.adapter.config.path_outputs == 0 and not hasattr(off.adapter, "path")


def test_with_the_path_out_proj_learns_at_a_hundredth_of_the_rate(llm, store, tmp_path):
    from msekit.train.loop import setup

    def rates(t):  # parameter name -> its group's peak learning rate (before the schedule)
        lr = {id(p): g["initial_lr"] for g in t.optimizer.param_groups for p in g["params"]}
        return {n: lr[id(p)] for n, p in t.adapter.named_parameters() if p.requires_grad}

    on = rates(setup(_cfg(store, tmp_path / "on", linear_path=True), llm=llm[0], tokenizer=llm[1]))
    assert {n: v for n, v in on.items() if n.startswith("out_proj.")} == {
        "out_proj.weight": pytest.approx(1e-4), "out_proj.bias": pytest.approx(1e-4)}
    assert {v for n, v in on.items() if not n.startswith("out_proj.")} == {1e-2}  # the path too
    same = rates(setup(_cfg(store, tmp_path / "set", linear_path=True, out_proj_lr=1.0), llm=llm[0],
                       tokenizer=llm[1]))
    off = rates(setup(_cfg(store, tmp_path / "off"), llm=llm[0], tokenizer=llm[1]))
    assert set(same.values()) == set(off.values()) == {1e-2}
    cfg = json.loads((tmp_path / "on/train_config.json").read_text())
    assert cfg["out_proj_lr"] is None and cfg["out_proj_lr_resolved"] == 0.01


def test_with_the_path_the_warm_start_is_validated_and_kept_unless_training_beats_it(llm, store, tmp_path):
    # lr 0: training cannot change the adapter, so no epoch beats the start (ties need a lower loss)
    res = _run(llm, store, tmp_path / "z", epochs=2, lr=0.0, linear_path=True)
    rows = [json.loads(x) for x in (tmp_path / "z/metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r["kind"] == "valid"]
    assert [r["epoch"] for r in valid] == [-1, 0, 1] and rows[0] == valid[0] and valid[0]["best"]
    assert not any(r["best"] for r in valid[1:])
    assert res.best_epoch == -1
    final = json.loads((tmp_path / "z/final_metrics.json").read_text())
    assert final["best_epoch"] == -1 and final["splits"]["valid"]["accuracy"] == valid[0]["accuracy"]
    # a real learning rate: the start is still the first candidate, and training may replace it
    res = _run(llm, store, tmp_path / "r", epochs=3, lr=5e-2, linear_path=True)
    rows = [json.loads(x) for x in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kind"] == "valid" and rows[0]["epoch"] == -1
    # ... but only by more than the margin: one bootstrap SE of the start's weighted F1
    start, margin = rows[0]["weighted_f1"], rows[0]["start_margin"]
    assert 0 <= margin < 1
    for r in [r for r in rows if r["kind"] == "valid"][1:]:
        if r["best"]:
            assert r["weighted_f1"] > start + margin
            break
    # an unreachable margin: the warm start is what the run keeps, whatever training does
    res = _run(llm, store, tmp_path / "m", epochs=3, lr=5e-2, linear_path=True, start_margin=1e6)
    rows = [json.loads(x) for x in (tmp_path / "m/metrics.jsonl").read_text().splitlines()]
    assert res.best_epoch == -1 and not any(r["best"] for r in rows if r["kind"] == "valid" and r["epoch"] >= 0)
    # without the path nothing is validated before training (the recipe as it was)
    _run(llm, store, tmp_path / "o", epochs=1)
    first = json.loads((tmp_path / "o/metrics.jsonl").read_text().splitlines()[0])
    assert first["kind"] == "train"


def test_with_the_path_a_resumed_run_matches_the_uninterrupted_one(llm, store, tmp_path):
    full = _run(llm, store, tmp_path / "full", linear_path=True, checkpoint_every=1)
    part = _run(llm, store, tmp_path / "part", linear_path=True, checkpoint_every=1, stop_after=1)
    assert part.interrupted
    resumed = _run(llm, store, tmp_path / "part", linear_path=True, checkpoint_every=1)
    assert resumed.global_step == full.global_step and resumed.best_epoch == full.best_epoch
    rows = [json.loads(x) for x in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "valid" and r["epoch"] == -1 for r in rows) == 1  # the start is not validated twice
    a, b = load_file(tmp_path / "full/adapter/adapter_model.safetensors"), \
        load_file(tmp_path / "part/adapter/adapter_model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
