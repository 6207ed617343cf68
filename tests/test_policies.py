"""kvpress-style matrix: every policy x budgets x granularity, driven through the real stepper."""
import numpy as np
import pytest
import torch

from backend.cache import KIND_PROMPT
from backend.policies import POLICIES, BudgetError, Full, Sink, Window, make_policy, parse_budget
from backend.stepper import GenerationError, Stepper

PROMPT = "a red circle and a square on blue stripes behind a wall"
N_FRAMES = 7
BOUNDED = [n for n in POLICIES if n != "full"]


def run(tiny, ae, policy, n=N_FRAMES, seed=4):
    st = Stepper(tiny, ae, PROMPT, n, seed=seed, policy=policy, preview=False)
    return st, list(st.run())


@pytest.mark.parametrize("name", BOUNDED)
@pytest.mark.parametrize("frames_budget", [2, 3.5])
@pytest.mark.parametrize("granularity", ["token", "frame"])
def test_matrix_budget_protection_alignment_determinism(tiny, ae, name, frames_budget, granularity):
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    kw = {"granularity": granularity}
    if name == "sink":
        kw["sink_frames"] = 1
    budget = P + int(frames_budget * tpf) + (tpf if name == "sink" else 0)
    st, recs = run(tiny, ae, make_policy(name, budget=budget, **kw))
    for r in recs:
        if r.phase == "evict":
            assert (r.occupancy <= budget).all(), (name, r.occupancy, budget)
            kept = r.kept[0]
            assert set(range(P)) <= set(kept)                           # prompt anchors are never evicted
            newest = {P + f * tpf + i for f in range(*r.frames) for i in range(tpf)}
            assert newest <= set(kept)                                  # nor is the newest chunk
            if name == "sink" and r.chunk >= 1:
                assert set(range(P, P + tpf)) <= set(kept)              # nor the sink frame
            if granularity == "frame":
                fr = (kept[kept >= P] - P) // tpf
                assert all((fr == f).sum() == tpf for f in np.unique(fr))   # whole frames only
    for layer in st.cache.layers:
        for v in layer.meta.values():
            assert v.shape[0] == len(layer)
        assert layer.k.shape[1] == len(layer)
    st2, _ = run(tiny, ae, make_policy(name, budget=budget, **kw))
    np.testing.assert_array_equal(st.frames, st2.frames)


def test_window_with_budget_above_length_equals_full(tiny, ae):
    full, _ = run(tiny, ae, Full())
    big, _ = run(tiny, ae, Window(budget=10_000))
    np.testing.assert_array_equal(full.frames, big.frames)
    wide, _ = run(tiny, ae, Window(frames=N_FRAMES))
    np.testing.assert_array_equal(full.frames, wide.frames)


def test_sink_with_zero_sink_equals_window(tiny, ae):
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    a, _ = run(tiny, ae, Sink(budget=P + 3 * tpf, sink_frames=0))
    b, _ = run(tiny, ae, Window(frames=3))
    c, _ = run(tiny, ae, Window(budget=P + 3 * tpf))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(b.frames, c.frames)


@pytest.mark.parametrize("text,kind,value", [("2048", "tokens", 2048), ("8f", "frames", 8), ("12.5%", "share", 12.5),
                                             ("512KB", "bytes", 512 * 1024), ("2MB", "bytes", 2 << 20)])
def test_parse_budget(text, kind, value):
    b = parse_budget(text)
    assert (b.kind, b.value) == (kind, value)


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "12.5", "150%", "3x", "", True])
def test_bad_budgets_are_rejected(bad):
    with pytest.raises(BudgetError):
        parse_budget(bad)


def test_budget_conversions():
    kw = dict(n_prompt=7, tokens_per_frame=64, n_frames=256, n_layer=4, bytes_per_token=1024)
    assert parse_budget("8f").tokens(**kw) == 7 + 8 * 64
    assert parse_budget("50%").tokens(**kw) == round(0.5 * (7 + 256 * 64))
    assert parse_budget("1MB").tokens(**kw) == (1 << 20) // (4 * 1024)


def test_budget_below_protected_is_rejected_before_work(tiny, ae):
    with pytest.raises(GenerationError, match="at least"):
        Stepper(tiny, ae, PROMPT, 5, policy=make_policy("h2o", budget=10))
    with pytest.raises(GenerationError, match="at least"):
        Stepper(tiny, ae, PROMPT, 5, policy=Sink(budget=7 + 64 * 2, sink_frames=3))
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError):
            make_policy("tova", budget=bad)
    with pytest.raises(KeyError):
        make_policy("nope")
    with pytest.raises(ValueError, match="parameter"):
        make_policy("tova", frames=3)
