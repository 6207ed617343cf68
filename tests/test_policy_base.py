import pytest
import torch

from backend.policies import make_policy, select


def test_select_keeps_protected_and_top_scores_with_newer_on_ties():
    scores = torch.tensor([5.0, 1.0, 3.0, 3.0, 0.0, 9.0])
    prot = torch.tensor([True, False, False, False, False, False])
    assert select(scores, prot, 3).tolist() == [0, 3, 5]  # 3.0 tie: index 3 is newer than 2
    assert select(scores, prot, 1).tolist() == [0]
    with pytest.raises(ValueError, match="protected"):
        select(scores, torch.ones(6, dtype=torch.bool), 3)


def test_registry_rejects_unknown_names_and_bad_windows():
    with pytest.raises(KeyError, match="known"):
        make_policy("nope")
    with pytest.raises(ValueError):
        make_policy("window", frames=0)


def test_top_newest_equals_a_stable_sort_with_ties_and_nan():
    """The O(n) selection keeps exactly what a stable descending sort of the newest-first order keeps."""
    import torch

    from backend.policies.select import top_newest

    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(1, 60, (1,), generator=g))
        vals = torch.randint(0, 5, (n,), generator=g).float()  # many ties
        if trial % 7 == 0:
            vals[torch.randint(0, n, (2,), generator=g)] = float("nan")
        if trial % 5 == 0:
            vals[0] = float("-inf")
        idx = torch.randperm(3 * n, generator=g)[:n].sort().values  # ascending cache indices
        k = int(torch.randint(0, n + 2, (1,), generator=g))
        newest_first = idx.flip(0)
        ref = newest_first[torch.sort(vals.flip(0), descending=True, stable=True).indices[:k]]
        assert set(top_newest(vals, idx, k).tolist()) == set(ref.tolist()), (vals, k)


def test_select_frames_equals_a_per_frame_greedy_loop():
    """The vectorised frame selection keeps what a plain loop keeps: protected tokens, then whole frames by
    mean score (newer frame on ties) while they fit, for equal and ragged frames in any cache order."""
    from backend.policies.select import select_frames

    g = torch.Generator().manual_seed(1)
    for trial in range(150):
        n_frames, per = int(torch.randint(2, 12, (1,), generator=g)), 4
        frame = torch.arange(n_frames).repeat_interleave(per)
        if trial % 2:  # ragged: some tokens already evicted
            frame = frame[torch.rand(len(frame), generator=g) > 0.3]
        frame = torch.cat([torch.full((3,), -1), frame])  # prompt tokens (frame -1)
        perm = torch.randperm(len(frame), generator=g)
        frame = frame[perm]  # cache order is not time order
        scores = torch.randint(0, 4, (len(frame),), generator=g).float()
        prot = (frame == -1) | (frame == int(frame.max()))
        budget = int(prot.sum()) + int(torch.randint(0, len(frame), (1,), generator=g))
        room, keep = budget - int(prot.sum()), prot.clone()
        free_frames = sorted({int(f) for f in frame[~prot]})
        means = {f: float(scores[(frame == f) & ~prot].mean()) for f in free_frames}
        for f in sorted(free_frames, key=lambda f: (-means[f], -f)):
            size = int(((frame == f) & ~prot).sum())
            if size <= room:
                keep |= (frame == f) & ~prot
                room -= size
        assert select_frames(scores, prot, frame, budget).tolist() == keep.nonzero().flatten().tolist()


def test_select_frames_strata_keeps_the_best_frame_of_each_span_first():
    """Strata: with room for k equal frames, the best frame (newer on ties) of each of k equal spans of
    frame index is kept first, then the best of the rest; a plain loop over spans is the reference."""
    from backend.policies.select import select_frames

    g = torch.Generator().manual_seed(3)
    for trial in range(150):
        n_frames, per = int(torch.randint(3, 30, (1,), generator=g)), 2
        present = torch.randperm(n_frames, generator=g)[: int(torch.randint(2, n_frames + 1, (1,), generator=g))]
        present = present.sort().values
        frame = torch.cat([torch.full((3,), -1), present.repeat_interleave(per)])
        frame = frame[torch.randperm(len(frame), generator=g)]
        scores = torch.randint(0, 5, (len(frame),), generator=g).float()
        prot = (frame == -1) | (frame == int(frame.max()))
        budget = int(prot.sum()) + per * int(torch.randint(0, len(present) + 1, (1,), generator=g))
        free = sorted({int(f) for f in frame[~prot]})
        means = {f: float(scores[frame == f].mean()) for f in free}
        best_first = sorted(free, key=lambda f: (-means[f], -f))
        k = (budget - int(prot.sum())) // per
        if 0 < k < len(free):
            lo, span = free[0], free[-1] - free[0] + 1
            winners = {
                min((f for f in best_first if (f - lo) * k // span == s), key=best_first.index)
                for s in range(k)
                if any((f - lo) * k // span == s for f in free)
            }
            chosen = [f for f in best_first if f in winners] + [f for f in best_first if f not in winners]
        else:
            chosen = best_first
        keep = prot | torch.isin(frame, torch.tensor(chosen[:k], dtype=torch.long))
        got = select_frames(scores, prot, frame, budget, strata=True)
        assert got.tolist() == keep.nonzero().flatten().tolist(), (trial, free, k)


def test_strata_spreads_the_kept_frames_over_time():
    """Salience rising with recency: frame granularity keeps the newest frames, strata one per span."""
    from backend.policies.select import select_frames

    frame = torch.cat([torch.full((2,), -1), torch.arange(20)])  # one token per frame
    scores = torch.cat([torch.zeros(2), torch.arange(20).float()])
    prot = frame < 0
    top = frame[select_frames(scores, prot, frame, 6)][2:].tolist()
    spread = frame[select_frames(scores, prot, frame, 6, strata=True)][2:].tolist()
    assert top == [16, 17, 18, 19]
    assert spread == [4, 9, 14, 19]  # the newest (best) frame of each quarter


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_frame_pool_equals_pooling_each_frame(kind):
    """Pooling a per-token signal on the stacked frame grids equals pooling each frame's image on its own
    (missing cells -inf for max, 0 for the average), prompt tokens untouched, any cache order."""
    import torch.nn.functional as F

    from backend.cache import LayerCache
    from backend.policies.flowcache import spatial_max
    from backend.policies.signals import spatial_pool

    g, grid = torch.Generator().manual_seed(2), 4
    frame = torch.cat([torch.full((2,), -1), torch.tensor([1, 4, 5]).repeat_interleave(grid * grid)])
    cell = torch.cat([torch.zeros(2, dtype=torch.long), torch.arange(grid * grid).repeat(3)])
    keep = torch.rand(len(frame), generator=g) > 0.25
    keep[:2] = True
    frame, cell = frame[keep], cell[keep]
    perm = torch.randperm(len(frame), generator=g)
    frame, cell = frame[perm], cell[perm]
    n = len(frame)
    layer = LayerCache(
        torch.zeros(1, n, 2),
        torch.zeros(1, n, 2),
        {"frame": frame, "y": cell // grid, "x": cell % grid, "kind": (frame >= 0).to(torch.int8)},
    )
    values = torch.rand(n, generator=g)
    out = spatial_max(values, layer, grid, 3) if kind == "max" else spatial_pool(values, layer, grid, 3)
    expect = values.clone()
    for f in (1, 4, 5):
        sel = (frame == f).nonzero().flatten()
        img = torch.full((grid * grid,), float("-inf") if kind == "max" else 0.0)
        img[cell[sel]] = values[sel]
        img = img.view(1, 1, grid, grid)
        pooled = F.max_pool2d(img, 3, 1, 1) if kind == "max" else F.avg_pool2d(img, 3, 1, 1, count_include_pad=False)
        expect[sel] = pooled.flatten()[cell[sel]]
    assert torch.equal(out, expect)


def test_reading_an_attention_signal_the_policy_did_not_request_raises(tiny, ae):
    """A score that reads past attention while the policy requests nothing would see zeros and keep the
    newest tokens like a FIFO window, silently: the observer refuses the read instead, naming the fix."""
    from dataclasses import dataclass

    from backend.observe import SignalNotRequested
    from backend.policies import H2O, Policy, Settings, make_policy
    from backend.policies.signals import past_attention
    from backend.stepper import Stepper

    @dataclass
    class Forgetful(H2O):
        name = "forgetful"
        reads = "none"  # the trap: reads past attention, requests none

        def score(self, layer_idx, layer, ctx):
            return past_attention(self.observed, layer_idx)

    budget = tiny.cfg.n_prompt + 3 * tiny.cfg.tokens_per_frame
    forgetful = Policy(Forgetful(), budget, Settings(period=1))
    st = Stepper(tiny, ae, "a red circle on blue stripes", 6, policy=forgetful, preview=False)
    with pytest.raises(SignalNotRequested, match="reads = 'probs'"):
        list(st.run())
    # recording more than the policy asks (the explorer's heatmaps) does not lift the check
    st = Stepper(
        tiny,
        ae,
        "a red circle on blue stripes",
        6,
        policy=Policy(Forgetful(), budget, Settings(period=1)),
        preview=False,
        attention=True,
    )
    with pytest.raises(SignalNotRequested):
        list(st.run())
    # the requested signal is read, and the observer follows the cache through every eviction
    st = Stepper(
        tiny, ae, "a red circle on blue stripes", 6, policy=make_policy("h2o", budget=budget, period=1), preview=False
    )
    list(st.run())
    for layer, s in zip(st.cache.layers, st.observer.stats):
        assert all(len(v) == len(layer) for v in s.values())
