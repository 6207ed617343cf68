"""One way to turn (policy name, budget text, parameters) into a Policy for a model and a video length.

Used by the CLI, the benchmark and the explorer, so that all three accept and reject the same inputs. It sits
above both the policies and the stepper: the oracle's reference is a full-cache run of the stepper.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def reference_scores(model, ae, prompt: str, n_frames: int, seed: int, sampler=None) -> list[np.ndarray]:
    """Per layer, a dense array over token ids of the hindsight attention in a full-cache run (the oracle's
    reference: `policies.oracle.hindsight_scores` of that run's observed attention)."""
    from .policies import make_policy
    from .policies.oracle import hindsight_scores
    from .stepper import Stepper

    kw = {} if sampler is None else {"sampler": sampler}
    st = Stepper(
        model, ae, prompt, n_frames, seed=seed, policy=make_policy("full"), preview=False, attention=True, **kw
    )
    for _ in st.run():
        pass
    return hindsight_scores(st.cache, st.observer)


def build_policy(
    name: str,
    budget: str | int | None,
    n_frames: int,
    model,
    ae=None,
    prompt: str = "",
    seed: int = 0,
    params: dict | None = None,
    progress: Callable | None = None,
    reference: list | None = None,
    sampler=None,
    models=None,
):
    """The named policy with its budget in tokens; `oracle` gets its full-cache reference run (slow, with the
    SamplerConfig `sampler`, default the shipped one), unless `reference` (``oracle.hindsight_scores`` of a
    full-cache run with the same prompt, seed, length and sampler) is given. `models`: the folder the model
    came from, whose learned parts (PaFu-KV's salience head) the policy scores with (None: the shipped ones),
    so every entry point scores with the weights it was given."""
    from .policies import POLICIES, make_policy
    from .policies.build import budget_tokens

    if name not in POLICIES:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    kw = dict(params or {})
    make_policy(name, **kw)  # bad parameters fail before anything runs
    if budget not in (None, ""):
        storage = {k: kw[k] for k in ("storage", "salient_storage", "salient_share", "quant", "residual") if k in kw}
        kw["budget"] = budget_tokens(budget, model.geometry, n_frames, **storage)
    if name == "oracle" and reference is not None:
        kw["reference"] = reference
    elif name == "oracle":
        if progress:
            progress("oracle: full-cache reference run")
        kw["reference"] = reference_scores(model, ae, prompt, n_frames, seed, sampler)
    policy = make_policy(name, **kw)
    if models is not None:
        try:
            policy.load_parts(models)
        except FileNotFoundError as e:  # a learned part this folder lacks: a clear input error, as bad names are
            raise ValueError(str(e)) from e
    head = policy.learned_head()
    if head is not None:
        head.check(model.geometry)  # a head distilled for another model is refused before anything runs
    return policy
