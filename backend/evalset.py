"""The held-out evaluation set: 32 prompt/seed pairs that training never samples.

Training draws seeds below ``EVAL_SEED_BASE`` and rejects any scene whose canonical prompt is in
``EVAL_PROMPTS`` (see ``backend.data``), so the evaluation prompts and seeds are never seen in training.
"""

from __future__ import annotations

import numpy as np

from .prompt import SceneSpec
from .world import sample_spec

EVAL_SEED_BASE = 1_000_000_000
N_EVAL = 32


def _eval_specs() -> list[SceneSpec]:
    rng = np.random.default_rng(20261122)
    specs: list[SceneSpec] = []
    seen: set[str] = set()
    # coverage: a quarter each of wall+open, wall, pan, pan+wall; open colours in half of them
    kinds = [(True, False, 0.6), (True, False, 0.0), (False, True, 0.3), (True, True, 0.3)]
    while len(specs) < N_EVAL:
        wall, pan, p_open = kinds[len(specs) % 4]
        s = sample_spec(rng, p_open=p_open, p_wall=float(wall), p_pan=float(pan))
        if s.text() not in seen:
            seen.add(s.text())
            specs.append(s)
    return specs


EVAL_SPECS: list[SceneSpec] = _eval_specs()
EVAL_PROMPTS: frozenset[str] = frozenset(s.text() for s in EVAL_SPECS)
EVAL_PAIRS: list[tuple[str, int]] = [(s.text(), EVAL_SEED_BASE + i) for i, s in enumerate(EVAL_SPECS)]
