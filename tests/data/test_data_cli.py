from __future__ import annotations

import json
import pickle

import numpy as np
from typer.testing import CliRunner

from msekit.cli import app
from msekit.dataset import StoreDataset, ViewConfig
from msekit.formats.safe_pickle import load_pickle

from .conftest import make_store
from .test_formats import mmsa_dict

runner = CliRunner()


def test_import_split_align_export(tmp_path):
    src = mmsa_dict(n=(12, 4, 4))
    pkl = tmp_path / "unaligned_50.pkl"
    pkl.write_bytes(pickle.dumps(src))
    store = tmp_path / "s.h5"
    res = runner.invoke(app, ["import", str(pkl), "--out", str(store)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["samples"] == 20
    res = runner.invoke(app, ["split", str(store), "--seed", "0"])
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = runner.invoke(app, ["split", str(store), "--seed", "0", "--ratios", "0.6,0.2,0.2", "--overwrite"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["align", str(store), "--mode", "none"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["align", str(store), "--mode", "word"])
    assert res.exit_code == 1 and "no sample has word timings" in res.output
    res = runner.invoke(app, ["align", str(store), "--mode", "sideways"])
    assert res.exit_code == 1 and "align mode must be one of" in res.output
    out = tmp_path / "back.pkl"
    res = runner.invoke(app, ["export", str(store), "--out", str(out)])
    assert res.exit_code == 0, res.output
    back = load_pickle(out)
    assert sum(len(back[s]["id"]) for s in back) == 20
    assert StoreDataset(store, "train", ViewConfig(normalize=True)).norm


def test_cli_refuses_code_in_pickles_and_aligns_rate(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("hi",))

    pkl = tmp_path / "aligned_50.pkl"
    pkl.write_bytes(pickle.dumps({"train": Evil()}))
    res = runner.invoke(app, ["import", str(pkl), "--out", str(tmp_path / "x.h5")])
    assert res.exit_code == 1 and "builtins.print" in res.output and "--trust-pickle" in res.output
    store = make_store(tmp_path / "s.h5")
    res = runner.invoke(app, ["align", str(store), "--mode", "rate", "--rate", "5"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["settings"]["rate"] == 5.0
    ds = StoreDataset(store, "train", ViewConfig(align="rate"))
    b = ds.collate(ds.__getitems__([0, 1]))
    assert b["audio"].shape[1] == b["video"].shape[1] == 10 and np.isfinite(b["audio"].numpy()).all()
