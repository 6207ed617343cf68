#!/usr/bin/env bash
# The Wan generator's speed on a lent GPU (issue 27): Wan2.1-T2V-1.3B shapes, random weights, bf16; full, window,
# sink, H2O and PaFu-KV at 1/8 (PaFu-KV also 1/4) out to 240 latent frames. Time-boxed (8 minutes in all) and
# rerunnable: each finished run is one line of $OUT/wan_speed/wan_speed.jsonl. Run from the repository root:
#   run: bash backend/bench/wan_gpu.sh
set -euo pipefail
OUT=${OUT:-out}
python -m pip install -q "diffusers>=0.42,<0.43" "transformers>=5,<6" "accelerate>=1.0" 2>/dev/null || true
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" || true
timeout 460 python -m backend.bench.wan_speed --shape 1.3b --device cuda --frames 240 --minutes 6 \
  --out "$OUT/wan_speed" || echo "stopped by the time box; finished runs are in $OUT/wan_speed"
