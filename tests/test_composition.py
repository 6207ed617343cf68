"""Policies as scorer + selector + wrappers: the registry's compositions, a new policy as one scorer, per-head
selection, and no run state on a policy."""

import dataclasses

import numpy as np
import pytest
import torch

from backend.policies import POLICIES, Policy, Scorer, Selector, Settings, make_policy, select
from backend.policies.wrappers import LayerSplit, Period, Realign
from backend.stepper import Stepper

PROMPT = "a red circle on blue stripes"


def test_every_registry_entry_is_a_scorer_and_a_composition():
    for name, entry in POLICIES.items():
        # an entry is its scorer's name, or a preset of a registered scorer told apart by its settings
        assert issubclass(entry.scorer, Scorer)
        assert entry.scorer.name == name or (entry.scorer.name in POLICIES and entry.settings)
        pol = make_policy(name)
        assert isinstance(pol, Policy) and pol.name == name
        for k, v in entry.settings.items():  # the entry's shared defaults reach the parts
            assert getattr(pol.settings, k) == v
    # neutral settings add no wrapper; each setting adds its own, in the order they run
    assert make_policy("window").wrappers == ()
    pol = make_policy("h2o", layer_split="cake", rope="shift_sink")
    assert [type(w) for w in pol.wrappers] == [LayerSplit, Period, Realign]
    assert pol.attention_stats == "probs" and not pol.uniform


def test_shared_settings_are_checked_where_they_live():
    with pytest.raises(ValueError, match="rope"):
        make_policy("h2o", rope="sideways")
    with pytest.raises(ValueError, match="period"):
        make_policy("h2o", period=0)
    with pytest.raises(ValueError, match="storage"):
        make_policy("full", storage="int3")
    with pytest.raises(ValueError, match="granularity"):
        make_policy("tempcache", granularity="frame")  # merging works on single tokens


@dataclasses.dataclass
class Oldest(Scorer):
    """A toy policy written as a user would: one scorer, nothing else (keeps the oldest frames)."""

    name = "oldest"

    def score(self, layer_idx, layer, ctx):
        return -layer.meta["frame"].float()


def test_a_new_policy_is_one_scorer_composed_with_any_selector_and_wrapper(tiny, ae):
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    for settings in (Settings(), Settings(granularity="frame", period=2, rope="reindex", storage="int8")):
        pol = Policy(Oldest(), P + 3 * tpf, settings)
        st = Stepper(tiny, ae, PROMPT, 7, seed=2, policy=pol, preview=False)
        last = [r for r in st.run() if r.phase == "evict"][-1]
        for kept in last.kept:
            frames = set(((kept[kept >= P] - P) // tpf).tolist())
            assert {0, 6} <= frames  # the oldest kept, the newest chunk protected
        assert (last.occupancy <= P + 3 * tpf).all()


def test_per_head_scores_select_each_heads_own_tokens():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(3, 40, generator=g)  # (H, n)
    prot = torch.zeros(40, dtype=torch.bool)
    prot[:4] = True
    meta = {"token_id": torch.arange(40), "frame": torch.arange(40) // 4}
    keep = Selector("token").keep(scores, prot, meta, 12)
    assert keep.shape == (3, 12)
    for h in range(3):
        assert keep[h].tolist() == select(scores[h], prot, 12, meta["token_id"]).tolist()
    assert len({tuple(k.tolist()) for k in keep}) == 3  # the heads keep different sets
    with pytest.raises(ValueError, match="per-head"):
        Selector("frame").keep(scores, prot, meta, 12)


@pytest.mark.parametrize("name", ["pafu", "packcache", "h2o"])
def test_a_policy_keeps_no_run_state(tiny, ae, name):
    """What a run learns lives in its observer: after a run the scorer's fields equal a fresh one's, and a
    second run with the same policy object draws the same frames."""
    from test_policies import learned_parts

    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    kw = learned_parts(tiny, ae, name, 8)
    pol = make_policy(name, budget=P + 3 * tpf, period=1, **kw)
    before = {f.name: getattr(pol.scorer, f.name) for f in dataclasses.fields(pol.scorer)}
    runs = []
    for _ in range(2):
        st = Stepper(tiny, ae, PROMPT, 8, seed=3, policy=pol, preview=False)
        recs = list(st.run())
        runs.append(st.frames.copy())
    after = {f.name: getattr(pol.scorer, f.name) for f in dataclasses.fields(pol.scorer) if f.name != "observed"}
    assert all(after[k] is before[k] or after[k] == before[k] for k in after)
    assert np.array_equal(runs[0], runs[1])
    if name == "packcache":
        assert set(st.observer.notes["rho"]) == set(range(tiny.cfg.n_layer))
    if name == "pafu":
        assert recs[-1].timings["head_ms"] > 0
