"""Discovery, ids, transcripts and labels (no decoding)."""

from __future__ import annotations

import json

import pytest

from msekit.errors import MsekitError
from msekit.inputs import in_shard, load_labels, load_transcripts, parse_shard, plan_inputs


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_discovery_recursive_unsupported_and_duplicates(tmp_path):
    _touch(tmp_path / "a" / "one.mp4")
    _touch(tmp_path / "a" / "deep" / "two.MKV")
    _touch(tmp_path / "a" / "notes.csv")
    _touch(tmp_path / "b" / "one.mov")  # same stem as a/one.mp4
    txt = _touch(tmp_path / "clip.txt")
    plan = plan_inputs([tmp_path / "a", tmp_path / "b", txt, tmp_path / "a" / "deep" / "two.MKV"])
    assert [it.id for it in plan.items] == ["two"]  # the explicit repeat of two.MKV counts once
    reasons = {(p.id, p.reason.split(" ")[0]) for p in plan.problems}
    assert reasons == {("clip", "unsupported"), ("one", "duplicate"), ("one", "duplicate")}
    dup = [p for p in plan.problems if p.id == "one"]
    assert len(dup) == 2 and all("one.mp4" in p.reason + p.path and "one.mov" in p.reason + p.path
                                 for p in dup)
    assert any("1 .csv" in w for w in plan.warnings)
    with pytest.raises(MsekitError, match="input not found"):
        plan_inputs([tmp_path / "nope"])


def test_transcript_layouts(tmp_path):
    w = []
    p = tmp_path / "t.csv"
    p.write_text('id,text,words\nx,"hi there","[[""hi"", 0.1, 0.3], [""there"", 0.3, 0.7]]"\ny,plain,\n')
    t = load_transcripts(p, w)
    assert t["x"].words == ["hi", "there"] and t["x"].word_times == [(0.1, 0.3), (0.3, 0.7)]
    assert t["y"].text == "plain" and t["y"].words == []
    p = tmp_path / "long.csv"
    p.write_text("id,word,start,end\nx,world,0.5,0.9\nx,hello,0.1,0.4\n")
    t = load_transcripts(p, w)
    assert t["x"].text == "hello world" and t["x"].word_times[0] == (0.1, 0.4)
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"a": "text a", "b": {"words": [{"word": "b", "start": 0, "end": 1}]}}))
    t = load_transcripts(p, w)
    assert t["a"].text == "text a" and t["b"].text == "b" and t["b"].word_times == [(0.0, 1.0)]
    assert w == []
    p = tmp_path / "bad.csv"
    p.write_text("name,text\n")
    with pytest.raises(MsekitError, match="'id' column"):
        load_transcripts(p, w)


def test_non_utf8_transcript_is_decoded_with_a_warning(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes("id,text\nx,caf\u00e9 cr\u00e8me\n".encode("cp1252"))
    w: list[str] = []
    t = load_transcripts(p, w)
    assert t["x"].text == "caf\u00e9 cr\u00e8me"
    assert len(w) == 1 and "not UTF-8" in w[0] and "cp1252" in w[0] and str(p) in w[0]


def test_labels_plain_and_mmsa_layout(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("id,label,split\na,pos,train\nb,neg,val\n")
    rows, mmsa = load_labels(p, [])
    assert not mmsa and rows["b"].split == "valid" and rows["a"].label == "pos"
    p.write_text("id,label,split\na,pos,holdout\n")
    with pytest.raises(MsekitError, match="split must be one of"):
        load_labels(p, [])
    # CH-SIMS / MMSA-FET: Raw/<video_id>/<clip_id>.mp4, ids video_id/clip_id, group, mode.
    raw = tmp_path / "sims" / "Raw"
    _touch(raw / "video 1" / "0001.mp4")
    _touch(raw / "video 1" / "0002.mp4")
    _touch(raw / "video_2" / "0001.mp4")
    lab = tmp_path / "sims" / "label.csv"
    lab.write_text("video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n"
                   "video 1,0001,hello,0.6,0.2,0.4,0.8,Positive,train\n"
                   "video 1,0002,,-0.2,0,0,0,Neutral,valid\n"
                   "video_2,0001,bye,-1.0,-1,-1,-1,Negative,test\n"
                   "video_3,0001,gone,0.0,0,0,0,Neutral,test\n")
    plan = plan_inputs([raw], labels=lab)
    by = {it.id: it for it in plan.items}
    assert sorted(by) == ["video 1/0001", "video 1/0002", "video_2/0001"]
    assert by["video 1/0001"].text == "hello" and by["video 1/0001"].group == "video 1"
    assert by["video_2/0001"].split == "test" and by["video_2/0001"].label == "-1.0"
    assert plan.orphan_ids == ["video_3/0001"]
    assert any("have no video" in w for w in plan.warnings)


def test_orphans_and_missing_transcripts(tmp_path):
    _touch(tmp_path / "v" / "a.mp4")
    _touch(tmp_path / "v" / "b.mp4")
    t = tmp_path / "t.csv"
    t.write_text("id,text\na,hello\nghost,boo\n")
    plan = plan_inputs([tmp_path / "v"], transcripts=t)
    assert plan.orphan_ids == ["ghost"] and plan.no_transcript == 1
    assert any("'b'" in w and "no transcript" in w for w in plan.warnings)


def test_shards():
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for bad in ("0/3", "4/3", "x", "1-3"):
        with pytest.raises(MsekitError, match="--shard"):
            parse_shard(bad)
    owners = [[k for k in (1, 2, 3) if in_shard(i, (k, 3))] for i in range(7)]
    assert all(len(o) == 1 for o in owners) and [o[0] for o in owners] == [1, 2, 3, 1, 2, 3, 1]
