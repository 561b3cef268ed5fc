"""The face-backend contract from outside msekit: a plugin package found by its entry point.

The plugin below is one file in a package of its own. It is made visible to Python the two ways
a user's install does it: as a distribution on ``sys.path`` (a ``.dist-info`` folder with
``entry_points.txt``, what pip writes) and, in the slow test, pip-installed into a fresh venv.
msekit is never edited; the installed ``msekit`` executable runs in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from msekit.errors import MsekitError
from msekit.extractors import base, parse_options

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
EXE = Path(sys.executable).parent / "msekit"
if not EXE.exists():  # pragma: no cover - an install without console scripts
    EXE = Path(shutil.which("msekit") or "msekit")

PLUGIN = '''
"""A toy face backend: brightness of the frame's centre as AU12, in the shared schema."""
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from msekit.extractors import Backend, face_feature_names, finish_rows, register
from msekit.media import iter_frames


@dataclass
class GlowConfig:
    fps: float | None = None
    gain: float = 1.0
    label: str = "x"


@register("video", "glow", GlowConfig)
class Glow(Backend):
    version: ClassVar[str] = "3"
    options: ClassVar[dict] = {"fps": "fps"}

    def __init__(self, config):
        self.config = config
        self.feature_names = face_feature_names(["glow"])

    def extract(self, path, info):
        values, starts = [], []
        for frames, times in iter_frames(path, info, fps=self.config.fps, max_width=64):
            values.append(frames.mean(axis=(1, 2, 3)) / 255.0 * self.config.gain)  # (n,)
            starts.append(times)
        v, t = np.concatenate(values), np.concatenate(starts)
        aus = np.zeros((len(v), 20))
        aus[:, 9] = v  # AU12
        return finish_rows(aus, np.zeros((len(v), 3)), v > 0, t, 1.0 / (self.config.fps or info.fps),
                           extra=v[:, None])
'''


def write_plugin(folder: Path, with_dist_info: bool) -> Path:
    """The plugin package ``glowface`` (+ its installed-distribution metadata) under ``folder``."""
    pkg = folder / "glowface"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    if with_dist_info:
        info = folder / "glowface-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: glowface\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("[msekit.extractors]\nglow = glowface\n")
    else:
        (folder / "pyproject.toml").write_text(textwrap.dedent("""\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "glowface"
            version = "0.1"
            [project.entry-points."msekit.extractors"]
            glow = "glowface"
            [tool.setuptools]
            packages = ["glowface"]
            """))
    return folder


def run_msekit(exe: Path, args: list[str], extra_path: str | None, cwd: Path):
    paths = [str(ROOT)] + ([extra_path] if extra_path else [])
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def check_store(store: Path) -> None:
    from msekit.store import StoreReader

    with StoreReader(store) as r:
        names = r.feature_names("video")
        assert names[:24] == base.face_feature_names() and names[24:] == ["glow"]
        cfg = r.settings["video"]
        assert cfg["backend"] == "glow" and cfg["version"] == "3"
        assert cfg["config"] == {"fps": 5.0, "gain": 2.0, "label": "x"}
        video = r.modality(0, "video")
        assert video.data.dtype == np.float32 and video.mask.all()
        glow = video.data[:, 24]  # the extra column, unclipped: brightness * gain 2
        assert glow.max() > 1.0
        np.testing.assert_allclose(video.data[:, 9], np.clip(glow, 0, 1))  # AUs clipped to [0, 1]
        assert np.all(video.data[:, 23] == 1.0)  # the face flag finish_rows writes


def extract_args(store: Path) -> list[str]:
    return ["extract", str(FIX / "single_face.mp4"), "--out", str(store), "--face", "glow",
            "--fps", "5", "--face-option", "gain=2", "--llm", "none", "--quiet"]


def test_plugin_on_sys_path_via_entry_point(tmp_path):
    site = write_plugin(tmp_path / "site", with_dist_info=True)
    res = run_msekit(EXE, extract_args(tmp_path / "s.h5"), str(site), tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    check_store(tmp_path / "s.h5")

    res = run_msekit(EXE, ["extract", str(FIX / "single_face.mp4"), "--out", str(tmp_path / "t.h5"),
                           "--face", "glow", "--face-option", "gian=2", "--llm", "none"],
                     str(site), tmp_path)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert "gian" in lines[0] and "allowed: fps, gain, label" in lines[0]
    assert not (tmp_path / "t.h5").exists()  # refused before any store is written

    res = run_msekit(EXE, ["extract", "x.mp4", "--out", "y.h5", "--face", "glow"], None, tmp_path)
    assert res.returncode == 1 and "must be one of" in res.stderr and "glow" in res.stderr


def test_broken_plugin_is_reported_not_fatal(tmp_path):
    site = write_plugin(tmp_path / "site", with_dist_info=True)
    (site / "glowface" / "__init__.py").write_text("raise ImportError('needs libglow')\n")
    res = run_msekit(EXE, ["extract", "x.mp4", "--out", "y.h5", "--face", "glow"], str(site), tmp_path)
    assert res.returncode == 1 and "glow" in res.stderr and "needs libglow" in res.stderr
    res = run_msekit(EXE, ["extract", "x.mp4", "--out", "y.h5", "--face", "openface",
                           "--llm", "none"], str(site), tmp_path)
    assert "needs libglow" not in res.stderr and "input not found" in res.stderr


@pytest.mark.slow
def test_plugin_pip_installed_in_a_venv(tmp_path):
    """``pip install`` of the plugin into a venv on top of msekit's: ``--face glow`` works."""
    src = write_plugin(tmp_path / "src", with_dist_info=False)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    # "On top of" msekit's environment: the new venv also sees this interpreter's packages.
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "msekit_parent.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps",
                          "--no-build-isolation", "--no-index", str(src)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    shutil.rmtree(src / "glowface")  # only the installed copy is left
    # The venv has no msekit script of its own: run the CLI module with the venv's python.
    store = tmp_path / "v.h5"
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", PYTHONPATH=str(ROOT))
    res = subprocess.run([str(py), "-m", "msekit", *extract_args(store)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    check_store(store)


@pytest.mark.parametrize("pairs, match", [
    (["min_confidence"], "expected KEY=VALUE"),
    (["csvdir=x"], r"has no option 'csvdir'; allowed: csv_dir, min_confidence, gaze"),
    (["gaze=maybe"], "expected true or false"),
    (["min_confidence=high"], r"expected a number \(float\)"),
])
def test_parse_options_errors(pairs, match):
    with pytest.raises(MsekitError, match=match):
        parse_options("video", "openface", pairs)


def test_parse_options_types(tmp_path):
    got = parse_options("video", "mediapipe", ["fps=none", "max_width=320", "blendshapes=1",
                                                f"model_path={tmp_path}"])
    assert got == {"fps": None, "max_width": 320, "blendshapes": True, "model_path": str(tmp_path)}


def test_register_checks_the_protocol():
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        fps: float | None = None

    class NoSettings:
        version = "1"
        options: dict = {}

        def extract(self, path, info): ...

    with pytest.raises(MsekitError, match=r"lacks \['settings'\]"):
        base.register("video", "bad", Cfg)(NoSettings)

    class WrongOption(base.Backend):
        options = {"fps": "frame_rate"}

        def extract(self, path, info): ...

    with pytest.raises(MsekitError, match="'fps' -> 'frame_rate'"):
        base.register("video", "bad", Cfg)(WrongOption)
    assert "bad" not in base.names("video")
