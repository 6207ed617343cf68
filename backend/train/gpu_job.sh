#!/usr/bin/env bash
# The shipped-model GPU job (one lent device, time-boxed, rerunnable): three candidates trained side by side on
# one GPU, each for MINUTES of wall time, weights and logs written to $OUT (default out/gpu_job):
#   gpufirst  the shipped student continued with the `gpufirst` recipe (first-chunk drill + own-rollout and
#             windowed context), the candidate named in docs/backend.md "Where the student fails"
#   large     a 4M-parameter student (`large` preset) trained from scratch with `gpuwin`: the capacity question
#   large_teacher  the bidirectional teacher at the `large` preset (`gpu` recipe): what PaFu-KV's head is
#             distilled from, should the large student ship
# Rerun: a state or weights file carried in runs/gpu/<name>/ is resumed from (state) or started from (weights).
# Evaluate the returned weights here with `python -m backend.bench weights` (validation pairs only).
# Usage: bash backend/train/gpu_job.sh [MINUTES] [DEVICE]   (defaults 6.5, cuda)
set -u
M=${1:-6.5}
DEV=${2:-cuda}
OUT=${OUT:-out/gpu_job}
W=${WORKERS:-5}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20
PY=${PY:-python3}
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/env.txt"

job() {  # name stage recipe preset init
    local name=$1 stage=$2 recipe=$3 preset=$4 init=$5 dir=runs/gpu/$1
    local args=(--recipe "$recipe" --preset "$preset" --device "$DEV" --workers "$W" --minutes "$M" --amp
                --runs-dir "$dir" --models-dir "$dir/models")
    mkdir -p "$dir/models"
    if [ -f "$dir/models/$stage.safetensors" ] && [ ! -f "$dir/$stage/state.safetensors" ]; then
        init=$dir/models/$stage.safetensors                     # returned weights of an earlier run
        cp "$init" "$dir/init.safetensors"; init=$dir/init.safetensors
    fi
    [ -n "$init" ] && args+=(--init "$init")
    "$PY" -m backend.train "$stage" "${args[@]}" > "$OUT/$name.log" 2>&1
    cp "$dir/models/$stage.safetensors" "$OUT/${name}_$stage.safetensors" 2>/dev/null
    { echo "--- log.jsonl"; cat "$dir/$stage/log.jsonl"; } >> "$OUT/$name.log" 2>/dev/null
}

job gpufirst student gpufirst default assets/models/student.safetensors &
job large student gpuwin large "" &
job large_teacher teacher gpu large "" &
wait
ls -la "$OUT"
