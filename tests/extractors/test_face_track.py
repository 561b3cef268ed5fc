"""The follower's rules on scripted detections: when it detects, what it crops, which face wins."""

from __future__ import annotations

import numpy as np
import pytest

from msekit.extractors.face_detect import box_iou, weighted_nms
from msekit.extractors.face_track import (
    FaceFollower,
    FollowerSettings,
    Track,
    choose_track,
    crop_window,
)

W, H = 640, 360


class Scene:
    """Faces per frame as boxes; a detector and a landmarker that read them."""

    def __init__(self, faces_at):
        self.faces_at = faces_at  # k -> list of (x, y, w, h)
        self.k = 0
        self.detections: list[int] = []
        self.reads: list[tuple[int, str, tuple[int, int]]] = []

    def detector(self, frame):
        self.detections.append(self.k)
        return np.array([[*b, 0.9] for b in self.faces_at(self.k)]).reshape(-1, 5)

    def landmark(self, image, which):
        self.reads.append((self.k, which, image.shape[:2]))
        if which == "full":  # MediaPipe's own detection: any face of at least 10% of the width
            big = [b for b in self.faces_at(self.k) if b[2] >= 0.1]
            return ("full", _corners(big[0])) if big else None
        return ("crop", np.array([0.25, 0.25, 0.75, 0.75])) if self.faces_at(self.k) else None


def _corners(b):
    return np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]])


def run(scene, n, settings=None, guide=None):
    f = FaceFollower(scene.detector, scene.landmark, settings or FollowerSettings(), guide)
    frame = np.zeros((H, W, 3), np.uint8)
    out = []
    for k in range(n):
        scene.k = k
        out.append(f.step(k, frame))
    return f, out


def test_closeup_detects_every_4n_frames_and_reads_the_whole_frame():
    scene = Scene(lambda k: [(0.3, 0.2, 0.3, 0.5)])
    f, out = run(scene, 250, FollowerSettings(redetect_every=30))
    assert scene.detections == [0, 120, 240]  # MediaPipe tracks a close-up on its own
    assert all(which == "full" for _, which, _ in scene.reads) and all(o is not None for o in out)
    assert f.followed == [0] * 250 and len(f.tracks) == 1


def test_small_face_detects_every_n_frames():
    scene = Scene(lambda k: [(0.7, 0.5, 0.05, 0.09)])
    run(scene, 70, FollowerSettings(redetect_every=30))
    assert scene.detections == [0, 30, 60]


def test_small_face_is_cropped_around_the_box():
    scene = Scene(lambda k: [(0.7, 0.5, 0.05, 0.09)])
    f, out = run(scene, 5)
    assert {which for _, which, _ in scene.reads} == {"crop"}
    h, w = scene.reads[0][2]
    assert h == w and abs(h - 2.0 * 0.09 * H) <= 1  # a square of twice the box's longer side
    x, y, bw, bh, score = out[0][1]
    assert score == 0.9 and 0.7 < x + bw / 2 < 0.75  # the crop's centre, mapped back


def test_lost_face_is_looked_for_at_once_then_every_few_frames():
    scene = Scene(lambda k: [(0.7, 0.5, 0.05, 0.09)] if k < 10 else [])
    f, out = run(scene, 20, FollowerSettings(redetect_every=30, lost_every=3))
    assert scene.detections == [0, 10, 13, 16, 19]  # lost at 10: at once, then every 3 frames
    assert [o is not None for o in out] == [True] * 10 + [False] * 10


def test_the_face_present_longest_wins_over_the_larger_one():
    big, small = (0.05, 0.1, 0.3, 0.5), (0.7, 0.5, 0.08, 0.14)
    scene = Scene(lambda k: ([big] if k < 25 else []) + [small])
    f, _ = run(scene, 90, FollowerSettings(redetect_every=10))
    assert f.followed[0] == 0 and f.followed[-1] == 1  # first the larger, then the other
    chosen = choose_track(f.tracks)
    # Regular detections: 0 (the big face read whole: next at 40), lost at 25, then the small
    # face is cropped: every 10 frames, 30 .. 80.
    assert chosen.id == 1 and chosen.regular == 7 and f.tracks[0].regular == 1
    # The second pass follows the chosen face only.
    again = Scene(scene.faces_at)
    g, out = run(again, 90, FollowerSettings(redetect_every=10), guide=chosen)
    assert g.followed == [1] * 90 and not again.detections
    assert all(o[1][0] > 0.6 for o in out)


def test_choose_track_near_ties_go_to_the_largest():
    a = Track(0, {0: np.array([0, 0, 0.1, 0.1, 0.9])}, regular=10)
    b = Track(1, {0: np.array([0, 0, 0.3, 0.3, 0.9])}, regular=9)
    c = Track(2, {0: np.array([0, 0, 0.5, 0.5, 0.9])}, regular=5)
    assert choose_track([a, b, c]).id == 1 and choose_track([]) is None


def test_box_at_interpolates_and_holds():
    t = Track(0, {0: np.array([0.0, 0, 0.1, 0.1, 1]), 10: np.array([0.5, 0, 0.1, 0.1, 1])})
    assert t.box_at(5, reach=10)[0] == pytest.approx(0.25)
    assert t.box_at(25, reach=20)[0] == 0.5 and t.box_at(40, reach=20) is None


def test_crop_window_is_clipped_to_the_frame():
    assert crop_window(np.array([0.0, 0.0, 0.1, 0.1]), 2.0, W, H) == (0, 0, 96, 82)  # 128 px square around (32, 18)
    x0, y0, x1, y1 = crop_window(np.array([0.45, 0.45, 0.1, 0.1]), 2.0, W, H)
    assert x1 - x0 == y1 - y0 == 128  # square, twice the longer side (64 px)


def test_weighted_nms_merges_overlapping_boxes():
    d = np.array([[0.1, 0.1, 0.2, 0.2, 0.9], [0.11, 0.1, 0.2, 0.2, 0.6], [0.6, 0.6, 0.1, 0.1, 0.7]])
    out = weighted_nms(d, 0.3)
    assert len(out) == 2 and out[0, 4] == 0.9 and 0.1 < out[0, 0] < 0.11
    assert box_iou(out[:1, :4], out[1:, :4])[0, 0] == 0.0
