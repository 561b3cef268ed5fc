#!/usr/bin/env bash
# The whole msekit chain on the bundled sample data, offline, on a CPU, in a few minutes:
#   extract (face + voice + transcript)  ->  train an adapter on the frozen default LLM
#   ->  evaluate on the held-out split  ->  predict straight from a video file.
#
# Usage: bash scripts/demo.sh [OUT]        (default OUT=runs/demo; `make demo` runs this)
# Env:   MSEKIT (default: msekit on PATH, else .venv/bin/msekit), WORKERS (default 2),
#        EPOCHS (default 16).
#
# Data: data/ravdess/ holds 60 RAVDESS clips of actor 05 (CC BY-NC-SA 4.0, see data/SOURCES.md):
# one of two neutral sentences spoken with an emotion, over a face video that carries no label.
# The demo learns arousal, low (neutral, calm, sad) or high (angry, happy, fearful, surprised),
# from data/ravdess/arousal.csv (disgust clips stay unlabelled); since the words never change, what
# it learns it learns from the voice, and the preset trains on the voice alone (the face video is
# cut from an unrelated recording). Pictures land in OUT/run: loss_curves.png and
# confusion_matrix.png.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${1:-runs/demo}"
WORKERS="${WORKERS:-2}"
EPOCHS="${EPOCHS:-16}"
if [ -n "${MSEKIT:-}" ]; then :
elif command -v msekit >/dev/null; then MSEKIT=msekit
else MSEKIT="$REPO/.venv/bin/msekit"; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg

step() { printf '\n== %s\n' "$*" >&2; }
mkdir -p "$OUT"

step "1/4 extract: face (mediapipe, 5 fps) + voice (eGeMAPS functionals) + transcript tokens of data/ravdess"
# resumable: a rerun skips clips already in the store
"$MSEKIT" extract data/ravdess --labels data/ravdess/arousal.csv --fps 5 --functionals --workers "$WORKERS" \
    --out "$OUT/features.h5" --quiet

step "2/4 train: MSE-Adapter on the frozen SmolLM2-135M (offline default), best epoch kept"
"$MSEKIT" train "$OUT/features.h5" --out "$OUT/run" --preset ravdess-smollm2-135m \
    --epochs "$EPOCHS" --overwrite

step "3/4 evaluate: held-out test split (statement 2, repetition 2)"
"$MSEKIT" evaluate "$OUT/run" "$OUT/features.h5" --split test --json "$OUT/run/test_metrics.json"

step "4/4 predict: straight from a video file (extracted with the settings the adapter records)"
CLIP=ravdess_03-01-05-02-02-02-05   # angry, strong intensity, a test clip
printf 'id,text\n%s,Dogs are sitting by the door\n' "$CLIP" > "$OUT/transcript.csv"
"$MSEKIT" predict "$OUT/run" "data/ravdess/$CLIP.mp4" --transcripts "$OUT/transcript.csv" --quiet
"$MSEKIT" predict "$OUT/run" "data/ravdess/$CLIP.mp4" --transcripts "$OUT/transcript.csv" \
    --decode generate --csv "$OUT/run/predict_generate.csv" --quiet

printf '\nDone. Run folder: %s/run (adapter/, metrics.jsonl, report.md, loss_curves.png, confusion_matrix.png)\n' "$OUT"
