#!/usr/bin/env bash
# The shipped-model GPU job (one lent device, time-boxed, rerunnable): three runs side by side on one GPU, weights,
# logs and probe tables written to $OUT (default out/gpu_job):
#   first     the first-frame schedule of the binding diagnosis (docs/decisions/binding_first_frame/): a frame-0
#             teacher from scratch on the shipped autoencoder (`--recipe frame0`, F minutes), the video teacher
#             from it (`gpu`, T minutes), then the student from that teacher (`gpuwin`, S minutes)
#   scratch   the same video teacher and student with no first-frame stage (the teacher gets F + T minutes): the
#             paired arm, so the schedule is judged at equal GPU time
#   factored  the shipped student continued with shared colour and shape embeddings (`--preset factored`) on the
#             `gpufirst` recipe (first-chunk drill + own-rollout and windowed context), F + T + S minutes
# Each arm ends with `bench binding --signal` (how far the frame-0 estimate follows the shape word) on its weights.
# Rerun: a state or weights file carried in runs/gpu/<name>/ is resumed from (state) or started from (weights).
# Evaluate the returned students here with `python -m backend.bench weights` (validation pairs only).
# Usage: bash backend/train/gpu_job.sh [MINUTES] [DEVICE]   (defaults 8 = F 2 + T 2 + S 4, cuda)
set -u
M=${1:-8}
F=$(python3 -c "print($M / 4)"); T=$F; S=$(python3 -c "print($M / 2)"); FT=$(python3 -c "print($M / 2)")
DEV=${2:-cuda}
OUT=${OUT:-out/gpu_job}
W=${WORKERS:-5}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20
PY=${PY:-python3}
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/env.txt"

job() {  # name stage recipe preset init minutes [dir]: one stage, resumed or started from returned weights
    local name=$1 stage=$2 recipe=$3 preset=$4 init=$5 minutes=$6 dir=${7:-runs/gpu/$1}
    local args=(--recipe "$recipe" --preset "$preset" --device "$DEV" --workers "$W" --minutes "$minutes" --amp
                --runs-dir "$dir" --models-dir "$dir/models")
    [ "$recipe" = frame0 ] && args+=(--steps 100000)            # frame0 is time-boxed, not step-counted
    mkdir -p "$dir/models"
    if [ -f "$dir/models/$stage.safetensors" ] && [ ! -f "$dir/$stage/state.safetensors" ]; then
        init=$dir/models/$stage.safetensors                     # returned weights of an earlier run
        cp "$init" "$dir/init_$stage.safetensors"; init=$dir/init_$stage.safetensors
    fi
    [ -n "$init" ] && args+=(--init "$init")
    "$PY" -m backend.train "$stage" "${args[@]}" >> "$OUT/$name.log" 2>&1
    cp "$dir/models/$stage.safetensors" "$OUT/${name}_${recipe}_$stage.safetensors" 2>/dev/null
    { echo "--- $stage log.jsonl"; cat "$dir/$stage/log.jsonl"; } >> "$OUT/$name.log" 2>/dev/null
}

signal() {  # name weights...: the shape signal of each weights file, into $OUT/name_signal
    local name=$1; shift
    local list; list=$(IFS=,; echo "$*")
    "$PY" -m backend.bench binding --signal --prompts 48 --weights "$list" --out "$OUT/${name}_signal" >> "$OUT/$name.log" 2>&1
}

first() {  # frame-0 teacher -> video teacher -> student, one folder (the student starts from the folder's teacher)
    local dir=runs/gpu/first
    job first teacher frame0 default "" "$F" "$dir/f0"
    job first teacher gpu default "$dir/f0/models/teacher.safetensors" "$T" "$dir"
    job first student gpuwin default "" "$S" "$dir"
    signal first "$dir/f0/models/teacher.safetensors" "$dir/models/teacher.safetensors" "$dir/models/student.safetensors"
}

scratch() {  # the paired arm: video teacher from scratch (F + T minutes) -> student
    local dir=runs/gpu/scratch
    job scratch teacher gpu default "" "$FT" "$dir"
    job scratch student gpuwin default "" "$S" "$dir"
    signal scratch "$dir/models/teacher.safetensors" "$dir/models/student.safetensors"
}

first &
scratch &
job factored student gpufirst factored assets/models/student.safetensors "$M" &
wait
ls -la "$OUT"
