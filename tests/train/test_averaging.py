"""``--ema``: the adapter that validation sees and the run saves is the weights' moving average."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from msekit.errors import MsekitError
from msekit.train import resolve_config, train
from msekit.train.averaging import WeightAverage
from tests.train.helpers import make_store, tiny_llm


def test_average_follows_the_ema_rule_and_gives_the_weights_back():
    net = torch.nn.Linear(3, 2)
    avg = WeightAverage(net, decay=0.75)
    seen = []
    for step in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(float(step + 1))
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        avg.update(net)
    expect = dict(seen[0])  # the first update copies, then avg <- 0.75 avg + 0.25 w
    for w in seen[1:]:
        expect = {k: 0.75 * expect[k] + 0.25 * w[k] for k in expect}
    with avg.applied(net):
        for k, v in net.state_dict().items():
            torch.testing.assert_close(v, expect[k])
    for k, v in net.state_dict().items():  # the raw weights are back after the block
        assert torch.equal(v, seen[-1][k])
    again = WeightAverage(torch.nn.Linear(3, 2), decay=0.75)
    again.load_state_dict(avg.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), avg.state_dict().values(), strict=True))


def test_saved_adapter_is_the_average_not_the_last_weights(tmp_path):
    store = make_store(tmp_path / "tiny.h5", n_per_split=(8, 4, 4))
    llm, tok = tiny_llm()
    cfg = resolve_config(store=str(store), out=str(tmp_path / "r"), epochs=1, batch_size=2, lr=1e-2, ema=0.5,
                         progress=False, report=False, baseline=False)
    train(cfg, llm=llm, tokenizer=tok)  # one epoch: the best adapter is that epoch's
    saved = load_file(tmp_path / "r/adapter/adapter_model.safetensors")
    raw = load_file(tmp_path / "r/checkpoint/adapter_model.safetensors")
    average = load_file(tmp_path / "r/checkpoint/average.safetensors")
    assert int(average["n_averaged"]) == 4  # 8 samples / batch 2: one update per optimizer step
    for k, v in saved.items():
        assert torch.equal(v, average[f"module.{k}"]), k
    assert max(float((saved[k] - raw[k]).abs().max()) for k in saved) > 0  # the raw weights moved on


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_ema_outside_0_1_is_refused(bad):
    with pytest.raises(MsekitError, match="ema must be in"):
        resolve_config(ema=bad)
