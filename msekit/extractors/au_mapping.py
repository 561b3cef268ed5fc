"""Blendshapes -> FACS action units: how the MediaPipe backend fills py-feat's 20 AU columns.

MediaPipe's FaceLandmarker outputs 52 blendshape scores in [0, 1]: ``_neutral`` plus 51 of
Apple ARKit's 52 coefficients (``tongueOut`` is missing). ARKit named its coefficients after
facial movements that mostly follow FACS, so most AUs map to one blendshape or to the mean of a
left/right pair. The table is the whole mapping (docs/au-mapping.md has the same table with notes):

======  ========================  ==========================================================
AU      FACS name                 value from the blendshapes (L/R = mean of Left and Right)
======  ========================  ==========================================================
AU01    inner brow raiser         browInnerUp
AU02    outer brow raiser         browOuterUp L/R
AU04    brow lowerer              browDown L/R
AU05    upper lid raiser          eyeWide L/R
AU06    cheek raiser              cheekSquint L/R
AU07    lid tightener             eyeSquint L/R
AU09    nose wrinkler             noseSneer L/R
AU10    upper lip raiser          mouthUpperUp L/R
AU11    nasolabial deepener       (AU09 + AU10) / 2                            [approximate]
AU12    lip corner puller         mouthSmile L/R
AU14    dimpler                   mouthDimple L/R
AU15    lip corner depressor      mouthFrown L/R
AU17    chin raiser               mouthShrugLower
AU20    lip stretcher             mouthStretch L/R
AU23    lip tightener             (mouthPress L/R + (mouthRollLower + mouthRollUpper) / 2) / 2
                                                                               [approximate]
AU24    lip pressor               mouthPress L/R
AU25    lips part                 max(jawOpen - mouthClose, mouthLowerDown L/R), clipped
AU26    jaw drop                  jawOpen
AU28    lip suck                  (mouthRollLower + mouthRollUpper) / 2
AU43    eyes closed               eyeBlink L/R
======  ========================  ==========================================================

Decisions behind the approximate rows:

- AU11 (zygomaticus minor) has no blendshape of its own. It deepens the upper nasolabial furrow
  and lifts the upper lip laterally, which ARKit spreads over noseSneer (AU09) and mouthUpperUp
  (AU10); their mean rises with AU11 but also with AU09 or AU10 alone.
- AU23 (lip tightener, orbicularis oris narrowing the red of the lips) has none either.
  mouthPress is FACS' AU24 (lips pressed together) and mouthRoll is AU28 (lips sucked in); both
  narrow the visible lips, so AU23 is their average. AU23, AU24 and AU28 are therefore correlated.
- AU25 (lips part): ARKit's ``mouthClose`` is the lip closure *while the jaw is open*, so lips are
  apart by about ``jawOpen - mouthClose``; lips also part without jaw movement when the lower lip
  is pulled down (mouthLowerDown, AU16), hence the max.

Caveat: these are approximations. Blendshape scores are geometric fits of a 3-D face model, not
FACS-coded intensities, and the mapping is *not calibrated* to py-feat's AU outputs (which are
per-AU classifier probabilities) nor to OpenFace's 0-5 intensities. Values share the [0, 1]
range and the AU meaning, not the scale: normalize per feature before mixing backends.
"""

from __future__ import annotations

import numpy as np

from msekit.errors import MsekitError

# py-feat's 20 AU columns, in the order every face backend writes them.
AU_NAMES: tuple[str, ...] = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU11", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28", "AU43",
)

# MediaPipe FaceLandmarker's 52 blendshape categories, in its output order.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)

# Linear part of the mapping: AU -> {blendshape: weight}. AU25 is the one non-linear AU
# (a max of a clipped difference) and is computed in ``blendshapes_to_aus``.
_LR = ("Left", "Right")


def _pair(stem: str) -> dict[str, float]:
    return {stem + side: 0.5 for side in _LR}


_AU09 = _pair("noseSneer")
_AU10 = _pair("mouthUpperUp")
_AU24 = _pair("mouthPress")
_AU28 = {"mouthRollLower": 0.5, "mouthRollUpper": 0.5}
LINEAR_MAPPING: dict[str, dict[str, float]] = {
    "AU01": {"browInnerUp": 1.0},
    "AU02": _pair("browOuterUp"),
    "AU04": _pair("browDown"),
    "AU05": _pair("eyeWide"),
    "AU06": _pair("cheekSquint"),
    "AU07": _pair("eyeSquint"),
    "AU09": _AU09,
    "AU10": _AU10,
    "AU11": {k: v / 2 for k, v in {**_AU09, **_AU10}.items()},
    "AU12": _pair("mouthSmile"),
    "AU14": _pair("mouthDimple"),
    "AU15": _pair("mouthFrown"),
    "AU17": {"mouthShrugLower": 1.0},
    "AU20": _pair("mouthStretch"),
    "AU23": {k: v / 2 for k, v in {**_AU24, **_AU28}.items()},
    "AU24": _AU24,
    "AU26": {"jawOpen": 1.0},
    "AU28": _AU28,
    "AU43": _pair("eyeBlink"),
}


def _weight_matrix() -> np.ndarray:
    index = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}
    w = np.zeros((len(BLENDSHAPE_NAMES), len(AU_NAMES)), np.float32)  # (52, 20)
    for j, au in enumerate(AU_NAMES):
        for shape, weight in LINEAR_MAPPING.get(au, {}).items():
            w[index[shape], j] = weight
    return w


_W = _weight_matrix()
_I = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}
_AU25 = AU_NAMES.index("AU25")


def blendshapes_to_aus(blendshapes: np.ndarray) -> np.ndarray:
    """Map MediaPipe blendshape scores to py-feat's 20 AU columns (see the module table).

    Args:
        blendshapes: (N, 52) scores in ``BLENDSHAPE_NAMES`` order.

    Returns:
        (N, 20) float32 AU values in [0, 1], columns in ``AU_NAMES`` order.

    Raises:
        MsekitError: the input is not (N, 52).

    Examples:
        >>> b = np.zeros((1, 52), np.float32)
        >>> b[0, BLENDSHAPE_NAMES.index("mouthSmileLeft")] = 0.8
        >>> round(float(blendshapes_to_aus(b)[0, AU_NAMES.index("AU12")]), 3)
        0.4
    """
    b = np.asarray(blendshapes, np.float32)
    if b.ndim != 2 or b.shape[1] != len(BLENDSHAPE_NAMES):
        raise MsekitError(f"blendshapes must be (N, {len(BLENDSHAPE_NAMES)}), got {b.shape}")
    b = np.clip(np.nan_to_num(b, nan=0.0), 0.0, 1.0)
    aus = b @ _W  # (N, 52) @ (52, 20) -> (N, 20)
    apart = b[:, _I["jawOpen"]] - b[:, _I["mouthClose"]]  # (N,)
    lower_lip_down = 0.5 * (b[:, _I["mouthLowerDownLeft"]] + b[:, _I["mouthLowerDownRight"]])
    aus[:, _AU25] = np.maximum(apart, lower_lip_down)
    return np.clip(aus, 0.0, 1.0)
