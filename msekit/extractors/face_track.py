"""One face track per clip: detect sparsely, follow the face, choose the clip's face by a rule.

``FaceFollower`` runs per video frame in front of a landmarker. It asks the full-range detector
only on the first frame, every ``redetect_every`` frames (every 4x that while a close-up face
is read on the whole frame, so close-ups cost what they cost without the detector) and when the
face was lost (then at most every ``lost_every`` frames while nothing is found), and in between
follows the face by the bounding box of the landmarks found on the previous frame. Per frame it
feeds the landmarker either

- the **whole frame**, when the followed face is at least ``full_frame_min_width`` of the frame
  width (close-ups: MediaPipe's own detection works there, and the rows equal those of msekit
  without the detector); the landmarker's face must lie inside the followed box, else
- a **crop** around the face (``crop_scale`` times the box side, square, clipped to the frame).

Detections are grouped into tracks (a detection joins the track whose last box overlaps it most,
IoU >= 0.3). **The clip's face** is the track present on most of the regular detection frames;
among tracks present on at least 90% as many, the largest (mean box area). The speaking face is
not looked for. The follower follows the largest face it sees first; when the rule picks
another track at the end, the caller runs the clip again with ``guide`` = that track's boxes,
so every frame belongs to the chosen face (frames where it is absent are masked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from msekit.extractors.face_detect import box_iou

# landmark(image (h, w, 3) uint8, which in {"full", "crop"}) -> (payload, bbox (4,)) or None,
# bbox = x0, y0, x1, y1 of the landmarks normalised to that image.
Landmarker = Callable[[np.ndarray, str], "tuple[object, np.ndarray] | None"]
_JOIN_IOU = 0.3
_NEAR_TIE = 0.9
_NEVER = 1 << 62
_CLOSEUP_SLOWDOWN = 4  # regular detections are 4x sparser on close-ups


@dataclass
class Track:
    """A face seen by the detector: frame index -> (x, y, w, h, score)."""

    id: int
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    regular: int = 0  # detections on regular (every-N) frames

    def last(self) -> np.ndarray:
        return self.boxes[max(self.boxes)]

    def area(self) -> float:
        return float(np.mean([b[2] * b[3] for b in self.boxes.values()]))

    def box_at(self, k: int, reach: int) -> np.ndarray | None:
        """The box at frame k: interpolated between detections <= 2 * reach apart, else the
        nearest detection within ``reach`` frames, else None (absent)."""
        ks = np.array(sorted(self.boxes))
        i = int(np.searchsorted(ks, k))
        before = ks[i - 1] if i > 0 else None
        after = ks[i] if i < len(ks) else None
        if after == k:
            return self.boxes[k]
        if before is not None and after is not None and after - before <= 2 * reach:
            t = (k - before) / (after - before)
            return (1 - t) * self.boxes[before] + t * self.boxes[after]
        near = [j for j in (before, after) if j is not None and abs(j - k) <= reach]
        return self.boxes[min(near, key=lambda j: abs(j - k))] if near else None


def choose_track(tracks: list[Track]) -> Track | None:
    """The clip's face: most regular detections; near ties (>= 90%) go to the largest."""
    if not tracks:
        return None
    most = max(t.regular for t in tracks)
    near = [t for t in tracks if t.regular >= _NEAR_TIE * most]
    return max(near, key=lambda t: (t.area(), t.regular, -t.id))


def crop_window(box: np.ndarray, scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel window x0, y0, x1, y1: a square of ``scale`` x the box's longer side (in pixels),
    centred on the box, clipped to the frame."""
    x, y, w, h = box[:4]
    side = scale * max(w * width, h * height)
    cx, cy = (x + w / 2) * width, (y + h / 2) * height
    n = max(1, round(side))
    left, top = round(cx - side / 2), round(cy - side / 2)  # corner first, so the crop is square
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(width, left + n), min(height, top + n)
    return int(x0), int(y0), int(max(x1, x0 + 1)), int(max(y1, y0 + 1))


@dataclass
class FollowerSettings:
    """How the follower detects and crops (the mediapipe backend's config fills it)."""

    redetect_every: int = 30
    lost_every: int = 3
    full_frame_min_width: float = 0.2
    crop_scale: float = 2.0


class FaceFollower:
    """Per-frame face following for one clip (see the module docstring).

    Args:
        detector: frame (H, W, 3) -> (K, 5) normalised boxes and scores.
        landmark: the landmarker callback (``Landmarker``).
        settings: intervals and crop geometry.
        guide: follow this track's boxes instead of choosing online (the second pass).
    """

    def __init__(self, detector, landmark: Landmarker, settings: FollowerSettings,
                 guide: Track | None = None) -> None:
        self.detector, self.landmark, self.s, self.guide = detector, landmark, settings, guide
        self.tracks: list[Track] = []
        self.followed: list[int | None] = []  # per frame: the track id followed (None: none)
        self.box: np.ndarray | None = None  # x, y, w, h, score of the face now followed
        self.track_id: int | None = None
        self.next_detect = 0  # the next frame to detect on outside the regular ones
        self.whole_frame = False  # the last frame's face was read on the whole frame

    def step(self, k: int, frame: np.ndarray) -> tuple[object, np.ndarray] | None:
        """Landmarks of the followed face on frame k: (payload, (5,) x y w h score) or None."""
        height, width = frame.shape[:2]
        detected = False
        if self.guide is not None:
            if self.box is None:  # (re)acquire the chosen face where its detections put it
                self.box = self.guide.box_at(k, self.s.redetect_every)
            elif k in self.guide.boxes:  # its detection score on this frame
                self.box = np.r_[self.box[:4], self.guide.boxes[k][4]]
            self.track_id = self.guide.id if self.box is not None else None
        elif self._regular(k) or k >= self.next_detect:
            self._detect(k, frame, regular=self._regular(k))
            detected = True
        found = self._landmarks(frame, width, height) if self.box is not None else None
        if found is None and self.guide is None and not detected and self.box is not None:
            self._detect(k, frame, regular=False)  # lost while following: look again at once
            found = self._landmarks(frame, width, height) if self.box is not None else None
        if found is None:
            self.box, self.whole_frame = None, False
            if self.guide is None:
                self.next_detect = min(self.next_detect, k + self.s.lost_every)
        self.followed.append(self.track_id if found is not None else None)
        return found

    def _regular(self, k: int) -> bool:
        """A regular detection frame: every N frames, every 4N while a close-up face is read on
        the whole frame (MediaPipe tracks it there; the detector would only add cost)."""
        every = self.s.redetect_every * (_CLOSEUP_SLOWDOWN if self.whole_frame else 1)
        return k % every == 0

    def _detect(self, k: int, frame: np.ndarray, regular: bool) -> None:
        dets = self.detector(frame)  # (K, 5)
        ids = self._join(k, dets, regular)
        if not len(dets):
            self.box, self.track_id = None, None
            self.next_detect = k + self.s.lost_every
            return
        self.next_detect = _NEVER  # until the next regular frame, or the face is lost
        # Keep following the same face; else take the largest one.
        same = [i for i, t in enumerate(ids) if t == self.track_id]
        j = same[0] if same else int(np.argmax(dets[:, 2] * dets[:, 3]))
        self.box, self.track_id = dets[j], ids[j]

    def _join(self, k: int, dets: np.ndarray, regular: bool) -> list[int]:
        """Add detections to tracks (greedy, best score first, by IoU with each track's latest
        box: the landmarks' box for the face followed now); return their track ids."""
        ids: list[int] = []
        free = list(self.tracks)
        for d in dets:
            best, best_iou = None, _JOIN_IOU
            for t in free:
                now = self.box if t.id == self.track_id and self.box is not None else t.last()
                iou = float(box_iou(d[None, :4], now[None, :4])[0, 0])
                if iou >= best_iou:
                    best, best_iou = t, iou
            if best is None:
                best = Track(len(self.tracks))
                self.tracks.append(best)
            else:
                free.remove(best)
            best.boxes[k] = np.asarray(d, np.float64)
            best.regular += regular
            ids.append(best.id)
        return ids

    def _landmarks(self, frame: np.ndarray, width: int, height: int):
        box = self.box
        self.whole_frame = False
        if box[2] >= self.s.full_frame_min_width:
            got = self.landmark(frame, "full")
            if got is not None and _inside(got[1], box):
                self.whole_frame = True
                return got[0], self._update(got[1], box[4])
        x0, y0, x1, y1 = crop_window(box, self.s.crop_scale, width, height)
        got = self.landmark(np.ascontiguousarray(frame[y0:y1, x0:x1]), "crop")
        if got is None:
            return None
        bx = got[1]
        sx, sy = (x1 - x0) / width, (y1 - y0) / height
        full = np.array([x0 / width + bx[0] * sx, y0 / height + bx[1] * sy,
                         x0 / width + bx[2] * sx, y0 / height + bx[3] * sy])
        return got[0], self._update(full, box[4])

    def _update(self, corners: np.ndarray, score: float) -> np.ndarray:
        """Follow the face by its landmarks' box (x0 y0 x1 y1 -> x y w h score)."""
        x0, y0, x1, y1 = corners
        self.box = np.array([x0, y0, x1 - x0, y1 - y0, score])
        return self.box


def _inside(corners: np.ndarray, box: np.ndarray) -> bool:
    """Whether the centre of the landmarks' box lies inside the followed box (grown by 50%)."""
    cx, cy = (corners[0] + corners[2]) / 2, (corners[1] + corners[3]) / 2
    x, y, w, h = box[:4]
    return (x - w / 4 <= cx <= x + w * 1.25) and (y - h / 4 <= cy <= y + h * 1.25)
