"""`python -m backend.bench behaviour [--write FILE | --check FILE]`: the frames every registered policy draws.

A refactor of the engine must leave what the model draws unchanged. This records, for every registered policy
at 1/8 and 1/4 of the full cache and at its own minimum budget, two fixed prompts and seeds, 32 frames with the
shipped model and sampler,
a digest of each generated frame (uint8 RGB) and of the final latents; `--check` re-runs and names every run
whose frames differ (first differing frame, max pixel difference is not recoverable from a digest, so the
check reports the frame index). Policies a budget cannot hold record the error they raise, which is part of
the behaviour too. The test suite checks the same fixture (tests/test_behaviour.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

PROMPTS = (
    ("a red circle and a blue square on green stripes behind a wall", 9111),
    ("a green triangle and a magenta circle on red checker with a camera pan", 4242),
)
SHARES = (0.125, 0.25)
FRAMES = 32
FIXTURE = Path("tests/fixtures/behaviour.json")


def digest(a) -> str:
    a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def run_key(policy: str, share: float | str | None, pair: int) -> str:
    return f"{policy}|{'full' if share is None else share}|{pair}"


def record(policy: str, share: float | str | None, pair: int, model, ae, references: dict) -> dict:
    """One run -> {"frames": [digest per frame], "latents": digest} or {"error": message}. `share` is a share of
    the full cache, "min" (the policy's minimum budget in tokens) or None (the full cache)."""
    from ..build import build_policy, reference_scores
    from ..policies import make_policy
    from ..stepper import Stepper

    prompt, seed = PROMPTS[pair]
    try:
        if share is None:
            pol = make_policy("full")
        else:
            ref = None
            if policy == "oracle":
                if pair not in references:
                    references[pair] = reference_scores(model, ae, prompt, FRAMES, seed)
                ref = references[pair]
            cfg = model.geometry
            budget = (
                str(make_policy(policy).min_budget(cfg.n_prompt, cfg.tokens_per_frame, cfg.chunk_frames))
                if share == "min"
                else f"{share * 100:.4f}%"
            )
            pol = build_policy(policy, budget, FRAMES, model, ae, prompt, seed, reference=ref)
        st = Stepper(model, ae, prompt, FRAMES, seed=seed, policy=pol, preview=False)
        for _ in st.run():
            pass
    except ValueError as e:
        return {"error": str(e)}
    return {"frames": [digest(f) for f in st.frames], "latents": digest(st.latents)}


def jobs() -> list[tuple[str, float | str | None, int]]:
    from ..policies import POLICIES

    out = [("full", None, p) for p in range(len(PROMPTS))]
    return out + [
        (name, sh, p) for name in POLICIES if name != "full" for sh in (*SHARES, "min") for p in range(len(PROMPTS))
    ]


def record_all(only=None, progress=True) -> dict:
    from tqdm import tqdm

    from ..loading import DEFAULT_AE, DEFAULT_MODEL, load_autoencoder, load_model

    model, ae = load_model(DEFAULT_MODEL), load_autoencoder(DEFAULT_AE)
    refs: dict = {}
    todo = [j for j in jobs() if only is None or run_key(*j) in only]
    return {run_key(*j): record(*j, model, ae, refs) for j in tqdm(todo, desc="runs", disable=not progress)}


def differences(expected: dict, got: dict) -> list[str]:
    """One line per run whose outcome differs from the fixture's."""
    out = []
    for key, want in expected.items():
        have = got.get(key)
        if have is None:
            continue
        if "error" in want or "error" in have:
            if want != have:
                out.append(f"{key}: expected {want.get('error', 'frames')!r}, got {have.get('error', 'frames')!r}")
            continue
        bad = [i for i, (a, b) in enumerate(zip(want["frames"], have["frames"])) if a != b]
        if bad or want["latents"] != have["latents"]:
            out.append(f"{key}: frames differ from frame {bad[0] if bad else '-'} ({len(bad)} of {FRAMES})")
    return out


def main(write: str | None = None, check: str | None = None) -> int:
    got = record_all()
    if write:
        Path(write).parent.mkdir(parents=True, exist_ok=True)
        meta = {"prompts": PROMPTS, "shares": SHARES, "frames": FRAMES, "torch": torch.__version__}
        Path(write).write_text(json.dumps({"meta": meta, "runs": got}, indent=0, sort_keys=True) + "\n")
        print(f"wrote {len(got)} runs to {write}")
    if check:
        diff = differences(json.loads(Path(check).read_text())["runs"], got)
        print("\n".join(diff) if diff else f"all {len(got)} runs draw the recorded frames")
        return 1 if diff else 0
    return 0
