#!/usr/bin/env bash
# The shipped-model GPU job (one lent device, time-boxed, rerunnable): three runs side by side on one GPU, each
# for MINUTES of wall time, weights, logs and probe tables written to $OUT (default out/gpu_job):
#   learn_coarse, learn_fine  the learnability probe of the binding diagnosis (docs/decisions/binding_factored/):
#             an autoencoder (`quick`, on the CPU cores) at 8x8x8 and at 16x16x4 latents, then a frame-0 teacher
#             from scratch on each (`--recipe frame0`), compared on how far the denoiser follows the shape word
#             (`bench binding --signal`): does a finer latent make the prompt's shape learnable?
#   factored  the shipped student continued with shared colour and shape embeddings (`--preset factored`) on the
#             `gpufirst` recipe (first-chunk drill + own-rollout and windowed context)
# Rerun: a state or weights file carried in runs/gpu/<name>/ is resumed from (state) or started from (weights).
# Evaluate the returned student here with `python -m backend.bench weights` (validation pairs only).
# Usage: bash backend/train/gpu_job.sh [MINUTES] [DEVICE]   (defaults 7, cuda)
set -u
M=${1:-7}
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

learn() {  # name ae-preset model-preset: the learnability probe (autoencoder, frame-0 teacher, signal)
    local name=learn_$1 dir=runs/gpu/learn_$1
    mkdir -p "$dir/models"
    [ -f "$dir/models/autoencoder.safetensors" ] ||
        "$PY" -m backend.train ae --recipe quick --preset "$2" --runs-dir "$dir" --models-dir "$dir/models" > "$OUT/$name.ae.log" 2>&1
    "$PY" -m backend.train teacher --recipe frame0 --preset "$3" --steps 100000 --device "$DEV" --workers "$W" \
        --minutes "$M" --amp --runs-dir "$dir" --models-dir "$dir/models" > "$OUT/$name.log" 2>&1
    for f in "$dir/models/"*.safetensors; do cp "$f" "$OUT/${name}_$(basename "$f")"; done
    "$PY" -m backend.bench binding --signal --prompts 48 --weights "$dir/models/teacher.safetensors" \
        --out "$OUT/$name" >> "$OUT/$name.log" 2>&1
}

learn coarse default default &
learn fine fine fine &
job factored student gpufirst factored assets/models/student.safetensors &
wait
ls -la "$OUT"
