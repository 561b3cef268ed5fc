"""Bad media, odd file names, special files and tables: one line each, never a crash.

One extraction over a folder holding every case (plus the three good clips, resumed on a store
that already holds them) gives each parametrized test its lines.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

from msekit.media import ffmpeg_exe
from msekit.store import StoreReader
from tests.data.test_formats import mmsa_dict
from tests.faults.conftest import (
    CLIPS,
    FIXTURES,
    RAVDESS,
    assert_kept,
    error_line,
    item_line,
    msekit,
    record,
    snapshot,
)

ODD = {"nonutf8": os.fsdecode(b"bad\xff\xfename.mp4"), "percent": "per%cent 50.mp4",
       "dash": "-dash.mp4", "unicode": "ünïcødé 名前.mp4", "newline": "new\nline.mp4"}


@pytest.fixture(scope="module")
def messy(tmp_path_factory, clips, reference):
    """(result, store, snapshot before, folder) of one extract over every bad input."""
    d = tmp_path_factory.mktemp("messy")
    for c in CLIPS:
        shutil.copy(c, d / c.name)
    for name in ("empty.mp4", "corrupt.mp4", "truncated.mp4", "no_face.mp4",
                 "silent_video_noaudio.mp4"):
        shutil.copy(FIXTURES / name, d / name)
    (d / "random.mp4").write_bytes(os.urandom(50_000))
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(CLIPS[0]), "-vn", "-c:a", "aac",
                    str(d / "audio_only.mp4")], check=True)
    for name in ODD.values():
        shutil.copy(CLIPS[1], d / name)
    os.mkfifo(d / "fifo.mp4")
    (d / "loop.mp4").symlink_to(d / "loop.mp4")
    store = d / "s.h5"
    shutil.copy(reference, store)
    before = snapshot(store)
    res = msekit("extract", d, d / "fifo.mp4", d / "loop.mp4", "--out", store, "--fps", "5")
    return res, store, before, d


def before_of(messy) -> dict[str, str]:
    return messy[2]


def _only(res: subprocess.CompletedProcess, line: str) -> subprocess.CompletedProcess:
    """The run's result with only ``line`` as its message (for the fault table)."""
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout, line)


def test_committed_samples_survive_a_messy_run(messy):
    res, store, before, _ = messy
    assert res.returncode == 1  # some items failed
    assert "Traceback" not in res.stderr
    assert_kept(before, snapshot(store))
    assert msekit("inspect", store).returncode == 0
    record("messy folder (all input cases below, one run)", res, len(before), len(snapshot(store)))


@pytest.mark.parametrize("name, stage", [("empty.mp4", "probe"), ("random.mp4", "probe"),
                                          ("corrupt.mp4", "probe"), ("truncated.mp4", "video")])
def test_unreadable_media_is_one_failure_line(messy, name, stage):
    res, store, _, d = messy
    line = item_line(res, str(d / name))
    assert f"at {stage}:" in line
    record(f"input: {name}", _only(res, line), len(before_of(messy)), len(snapshot(store)))
    with StoreReader(store) as r:
        assert Path(name).stem not in r and Path(name).stem in {x["id"] for x in r.failures()}


@pytest.mark.parametrize("name, missing", [("audio_only.mp4", "video"),
                                           ("silent_video_noaudio.mp4", "audio")])
def test_a_missing_stream_is_a_sample_with_length_0(messy, name, missing):
    res, store, _, d = messy
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:") and name in ln]
    assert len(warned) == 1 and f"no {missing} stream" in warned[0]
    record(f"input: {name} (a sample)", _only(res, warned[0]), len(before_of(messy)),
           len(snapshot(store)))
    with StoreReader(store) as r:
        i = r.index(Path(name).stem)
        assert r.lengths(missing)[i] == 0
        other = "audio" if missing == "video" else "video"
        assert r.lengths(other)[i] > 0


def test_no_face_is_a_sample_with_masked_frames(messy):
    res, store, _, d = messy
    warned = [ln for ln in res.stderr.splitlines() if "no face" in ln and "no_face.mp4" in ln]
    assert len(warned) == 1
    record("input: no_face.mp4 (a sample)", _only(res, warned[0]), len(before_of(messy)),
           len(snapshot(store)))
    with StoreReader(store) as r:
        video = r.modality(r.index("no_face"), "video")
        assert len(video.mask) > 0 and not video.mask.any()


@pytest.mark.parametrize("case", sorted(ODD))
def test_odd_file_names_become_samples(messy, case):
    res, store, _, d = messy
    name = ODD[case]
    raw = os.fsencode(d / name)
    with StoreReader(store) as r:
        got = [s for s in r if s.source_hex and bytes.fromhex(s.source_hex) == raw
               or s.source == str(d / name)]
        assert len(got) == 1
        s = got[0]
        assert len(s.modalities["video"].data) and len(s.modalities["audio"].data)
        if case == "nonutf8":
            assert s.id == "bad%FF%FEname" and bytes.fromhex(s.source_hex) == raw
        else:
            assert s.id == Path(name).stem and not s.source_hex
    record(f"input: odd name {case} (a sample)", _only(res, f"sample {s.id!r} kept"),
           len(before_of(messy)), len(snapshot(store)))


@pytest.mark.parametrize("name", ["fifo.mp4", "loop.mp4"])
def test_special_files_named_explicitly_are_one_failure_line(messy, name):
    res, _, _, d = messy
    line = item_line(res, str(d / name))
    assert "not a regular file" in line
    record(f"input: {name} (named explicitly)", _only(res, line), len(before_of(messy)),
           len(snapshot(messy[1])))


def test_special_files_inside_a_folder_are_counted_in_one_warning(messy):
    res, *_ = messy
    warned = [ln for ln in res.stderr.splitlines() if "not regular files" in ln]
    assert len(warned) == 1 and "2 not regular files" in warned[0]


# --- tables -------------------------------------------------------------------------------------

def _labels(tmp_path, reference, body: bytes, name="labels.csv"):
    store = tmp_path / "s.h5"
    shutil.copy(reference, store)
    table = tmp_path / name
    table.write_bytes(body)
    return store, table


@pytest.mark.parametrize("encoding", ["bom", "crlf", "latin-1"])
def test_labels_csv_encodings_load(tmp_path, reference, encoding):
    ids = [c.stem for c in CLIPS]
    text = "id,label,split,text\n" + "".join(f"{i},café,train,déjà vu\n" for i in ids)
    body = {"bom": b"\xef\xbb\xbf" + text.encode(),
            "crlf": text.replace("\n", "\r\n").encode(),
            "latin-1": text.encode("latin-1")}[encoding]
    store, table = _labels(tmp_path, reference, body)
    before = snapshot(store)
    res = msekit("label", store, table)
    assert res.returncode == 0, res.stderr
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:") and "UTF-8" in ln]
    assert len(warned) == (encoding == "latin-1")
    record(f"labels CSV: {encoding}", res, len(before), len(snapshot(store)))
    with StoreReader(store) as r:
        assert set(r.column("label")) == {"café"} and set(r.column("text")) == {"déjà vu"}
        assert set(r.column("split")) == {"train"}
        from msekit.llm import load_text_encoder

        want = list(load_text_encoder(r.settings["extract"]["llm"]).encode("déjà vu"))
        assert all(r.sample(i).token_ids.tolist() == want for i in range(len(r)))  # re-tokenized
        frames = [r.modality(i, m).data.tobytes() for i in range(len(r)) for m in r.modalities]
    with StoreReader(reference) as r:  # the features are untouched
        assert frames == [r.modality(i, m).data.tobytes() for i in range(len(r)) for m in r.modalities]
    assert set(snapshot(store)) == set(before)


def test_duplicate_id_in_labels_names_both_lines(tmp_path, reference):
    a, b = CLIPS[0].stem, CLIPS[1].stem
    store, table = _labels(tmp_path, reference,
                           f"id,label\n{a},x\n{b},y\n{a},z\n".encode())
    before = snapshot(store)
    res = msekit("label", store, table)
    assert res.returncode == 1
    error_line(res, str(table), f"{a!r} is on line 2 and line 4")
    assert snapshot(store) == before
    record("labels CSV: duplicate id", res, len(before), len(snapshot(store)))


def test_duplicate_id_in_transcripts_names_both_lines(tmp_path, clips):
    a = CLIPS[0].stem
    table = tmp_path / "t.csv"
    table.write_text(f"id,text\n{a},one\n{a},two\n")
    res = msekit("extract", clips, "--out", tmp_path / "s.h5", "--transcripts", table, "-q")
    assert res.returncode == 1
    error_line(res, str(table), "line 2 and line 3")
    record("transcripts CSV: duplicate id", res, 0, 0)
    assert not (tmp_path / "s.h5").exists()


def test_label_command_and_extract_rerun_update_labels(tmp_path, clips, reference):
    store = tmp_path / "s.h5"
    shutil.copy(reference, store)
    res = msekit("label", store, RAVDESS / "labels.csv")
    assert res.returncode == 0 and "changed label 3" in res.stdout, res.stdout
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("id,label\n" + f"{CLIPS[0].stem},angry\n")
    res = msekit("extract", clips, "--out", store, "--labels", fixed, "--fps", "5", "-q")
    assert res.returncode == 0, res.stderr
    assert "updated from the tables: label 3" in " ".join(res.stdout.split())
    with StoreReader(store) as r:
        assert r.column("label").tolist() == ["angry", "", ""]


def test_read_only_out_is_one_line(readonly_dir, clips, reference):
    out = readonly_dir / "s.h5"
    res = msekit("extract", clips / CLIPS[0].name, "--out", out, "--fps", "5", "-q")
    assert res.returncode == 1
    error_line(res, str(out), "cannot write")
    record("read-only --out: extract", res, 0, 0)
    pkl = readonly_dir.parent / "good.pkl"
    with open(pkl, "wb") as fh:
        pickle.dump(mmsa_dict(), fh, protocol=4)
    store = readonly_dir.parent / "split.h5"
    assert msekit("import", pkl, "--out", store).returncode == 0
    before = snapshot(store)
    res = msekit("export", store, "--out", readonly_dir / "x.pkl")
    assert res.returncode == 1
    error_line(res, str(readonly_dir / "x.pkl"), "cannot write")
    assert snapshot(store) == before
    record("read-only --out: export", res, len(before), len(snapshot(store)))


def test_extract_accepts_trust_remote_code(tmp_path, clips):
    res = msekit("extract", clips / CLIPS[0].name, "--out", tmp_path / "s.h5", "--fps", "5", "-q",
                 "--trust-remote-code")
    assert res.returncode == 0, res.stderr
    record("extract --trust-remote-code", res, 0, len(snapshot(tmp_path / "s.h5")))
