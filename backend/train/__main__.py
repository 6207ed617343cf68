"""`python -m backend.train STAGE [--recipe quick|default] [--fresh]`: one command per training stage.

Stages run in order: ae -> teacher -> student (-> decoder, optional: sharpen the decoder with the encoder
frozen, so trained video models stay valid) -> salience (PaFu-KV's head, distilled from the teacher).
Each is resumable
from runs/<stage>/state.safetensors and writes shipped weights to assets/models/.
"""

from __future__ import annotations

import argparse
import importlib

from ..models.wan_loading import add_wan_arguments
from ..salience import LABELS

STAGES = {
    "ae": "backend.train.ae",
    "teacher": "backend.train.video",
    "student": "backend.train.video",
    "decoder": "backend.train.decoder",
    "salience": "backend.train.salience",
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m backend.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("stage", choices=sorted(STAGES), help="which stage to train")
    ap.add_argument("--recipe", default="quick", help="training recipe (quick fits in an hour on 2 CPU cores)")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's step count")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing run state and start over")
    ap.add_argument(
        "--preset",
        default=None,
        help="model preset for teacher/student (default: the recipe's), or "
        "the autoencoder's (backend.autoencoder.AE_PRESETS)",
    )
    ap.add_argument(
        "--init",
        default=None,
        help="teacher/student: start from these weights (e.g. the shipped "
        "student) instead of the default initialisation, when there is no run state to resume",
    )
    ap.add_argument("--runs-dir", default="runs", help="resumable training state and logs (default runs/)")
    ap.add_argument("--models-dir", default="assets/models", help="where weights are written (default assets/models/)")
    ap.add_argument(
        "--labels",
        default=None,
        choices=LABELS,
        help="salience: the head's training labels, the teacher's SSE (default, the paper) or the "
        "student's own hindsight attention (our variant; written to salience_head_hindsight.safetensors)",
    )
    ap.add_argument(
        "--model",
        default=None,
        help="salience: wan:DIR distils the head for a Wan2.1-based generator (a diffusers-format folder; "
        "teacher: its own bidirectional Wan2.1 transformer), written to --models-dir (default DIR)",
    )
    add_wan_arguments(ap, device=False)
    ap.add_argument("--device", default="cpu", help="teacher/student: torch device, e.g. cuda (default cpu)")
    ap.add_argument("--workers", type=int, default=0, help="teacher/student: processes drawing training clips")
    ap.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="teacher/student: wall-time cap; the cosine schedule anneals by time as well as steps",
    )
    ap.add_argument("--batch", type=int, default=None, help="teacher/student: override the recipe's batch")
    ap.add_argument("--long-batch", type=int, default=None, help="teacher/student: override the long-clip batch")
    ap.add_argument(
        "--seed",
        type=int,
        default=None,
        help="teacher/student: override the recipe's seed (initialisation and clips; replicate runs)",
    )
    ap.add_argument(
        "--amp",
        action="store_true",
        help="teacher/student: bfloat16 autocast for the model's passes (weights and targets stay fp32; for GPUs)",
    )
    a = ap.parse_args(argv)
    if a.model is not None or a.generator is not None or a.dtype is not None:
        return _wan(ap, a)
    mod = importlib.import_module(STAGES[a.stage])
    kw = {"recipe": a.recipe, "resume": not a.fresh, "runs": a.runs_dir, "models": a.models_dir}
    if a.steps is not None:
        kw["steps"] = a.steps
    if a.stage == "salience":
        kw["labels"] = a.labels
    if a.stage == "ae":
        kw["preset"] = a.preset
    if a.stage in ("teacher", "student"):
        kw["stage"] = a.stage
        kw["preset"] = a.preset
        kw["init"] = a.init
        kw.update(
            device=a.device,
            workers=a.workers,
            minutes=a.minutes,
            batch=a.batch,
            long_batch=a.long_batch,
            amp=a.amp,
            seed=a.seed,
        )
    mod.run(**kw)


def _wan(ap, a) -> None:
    """`salience --model wan:DIR`: the head of a Wan generator (backend.train.salience_wan)."""
    from ..__main__ import WAN
    from ..models.wan_loading import wan_options

    if a.stage != "salience" or not (a.model or "").startswith(WAN):
        ap.error(
            "--model wan:DIR (and --generator, --dtype) apply to the salience stage: a Wan generator's PaFu-KV head"
        )
    from .salience_wan import run

    try:
        dtype, size = wan_options(a.device, a.dtype, a.size)
    except ValueError as e:
        ap.error(str(e))
    models = None if a.models_dir == ap.get_default("models_dir") else a.models_dir
    run(a.model[len(WAN) :], a.generator, a.recipe, a.steps, a.runs_dir, models, a.labels, a.device, dtype, size)


if __name__ == "__main__":
    main()
