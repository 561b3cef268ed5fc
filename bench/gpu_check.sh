#!/usr/bin/env bash
# The one command for the rented GPU machine (one H200, no internet): runs bench/gpu_check.py
# on CUDA and leaves gpu_check.json, gpu_check.txt, runs_small.tar.gz and gpu_check.log in $OUT.
#
# Needs the working tree plus the ignored folder .gpu/ (tokenizer/ and features.h5; see the
# docstring of bench/gpu_check.py), run from anywhere: bash bench/gpu_check.sh [extra args]
# The script skips its optional parts once 300 s have passed (--budget); the hard stop is 420 s.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
export OUT
PYTHONPATH=. PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg \
    timeout -k 10 420 python3 bench/gpu_check.py --device cuda --budget 300 "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
