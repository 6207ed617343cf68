import numpy as np
import pytest

from backend.cache import KIND_PROMPT
from backend.policies import make_policy
from backend.stepper import GenerationError, Stepper

PROMPT = "a red circle and a square on blue stripes behind a wall"


def run(tiny, ae, **kw):
    st = Stepper(tiny, ae, PROMPT, kw.pop("n", 5), **kw)
    return st, list(st.run())


def test_records_follow_the_cache_lifecycle(tiny, ae):
    st, recs = run(tiny, ae, seed=1, policy=make_policy("window", frames=2))
    S, tpf, P = 4, tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    assert recs[0].phase == "prefill" and list(recs[0].occupancy) == [P] * tiny.cfg.n_layer
    body = [r.phase for r in recs[1:]]
    first = len(st.ts_first)  # the first chunk (no context) takes more steps
    assert first == 16 and len(st.ts_rest) == S
    assert body == ["denoise"] * first + ["commit", "evict"] + (["denoise"] * S + ["commit", "evict"]) * 4
    for r in recs:
        assert isinstance(r.occupancy, np.ndarray) and not r.occupancy.flags.writeable
        if r.phase == "denoise":
            assert r.preview.shape == (1, 64, 64, 3) and r.preview.dtype == np.uint8 and r.t > 0
            assert r.kept is None
        if r.phase == "evict":
            assert all(len(k) == o for k, o in zip(r.kept, r.occupancy))
            assert r.occupancy.max() <= P + 2 * tpf
        with pytest.raises(ValueError, match="read-only"):
            r.occupancy[0] = 1
    ev = [r for r in recs if r.phase == "evict"]
    assert len(ev[1].evicted[0]) == 0 and len(ev[2].evicted[0]) == tpf  # frame 0 leaves at chunk 2
    assert set(ev[2].evicted[0]) == set(range(P, P + tpf))
    assert ev[2].scores[0] is not None and len(ev[2].scores[0]) == P + 3 * tpf
    # denoise steps read only: occupancy changes only at commit and evict
    for a, b in zip(recs, recs[1:]):
        if b.phase == "denoise":
            assert np.array_equal(a.occupancy, b.occupancy)
    assert st.frames.shape == (5, 64, 64, 3) and st.done


def test_deterministic_and_noise_shared_across_policies(tiny, ae):
    a, _ = run(tiny, ae, seed=7)
    b, _ = run(tiny, ae, seed=7)
    c, _ = run(tiny, ae, seed=8)
    w, _ = run(tiny, ae, seed=7, policy=make_policy("window", frames=1))
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    # same noise: frames 0 and 1 see the same context under full and window(1) ... frame 1 sees frame 0 in both
    np.testing.assert_array_equal(a.frames[:2], w.frames[:2])
    assert not np.array_equal(a.frames[2:], w.frames[2:])


def test_cancel_mid_chunk_leaves_a_consistent_cache(tiny, ae):
    st = Stepper(tiny, ae, PROMPT, 6, seed=2)
    n = 1 + (len(st.ts_first) + 2) + (len(st.ts_rest) + 2) + 2  # prefill, two chunks, 2 steps of the third
    for _ in range(n):
        rec = st.step()
    assert rec.phase == "denoise"
    st.cancel()
    assert list(st.run()) == []
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    for layer in st.cache.layers:
        assert len(layer) == P + 2 * tpf
        assert set(layer.meta["frame"][layer.meta["kind"] != KIND_PROMPT].tolist()) == {0, 1}
        for val in layer.meta.values():
            assert val.shape[0] == len(layer)
    assert (st.frames[2:] == 0).all() and (st.frames[:2] != 0).any()


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_frame_counts(tiny, ae, n):
    with pytest.raises(GenerationError):
        Stepper(tiny, ae, PROMPT, n)


def test_frame_count_that_would_exceed_memory(tiny, ae, monkeypatch):
    import backend.stepper as stepper

    monkeypatch.setattr(stepper, "available_memory", lambda: 2 << 30)
    with pytest.raises(GenerationError, match="GiB"):
        Stepper(tiny, ae, PROMPT, 90_000)
    Stepper(tiny, ae, PROMPT, 90_000, policy=make_policy("window", frames=4))  # a bounded cache fits
    with pytest.raises(GenerationError, match="limit"):
        Stepper(tiny, ae, PROMPT, 10**9)


def test_colour_guidance_steers_the_chunks_it_is_set_for_and_only_prompted_colours(tiny, ae):
    from backend.config import SamplerConfig

    base, _ = run(tiny, ae, seed=3, n=3, sampler=SamplerConfig(first_guidance=1.0, guidance=1.0))
    shipped, _ = run(tiny, ae, seed=3, n=3)  # the default guides every chunk
    first, _ = run(tiny, ae, seed=3, n=3, sampler=SamplerConfig(first_guidance=3.0, guidance=1.0))
    every, _ = run(tiny, ae, seed=3, n=3, sampler=SamplerConfig(first_guidance=1.0, guidance=3.0))
    assert SamplerConfig().guidance != 1.0 and shipped._guide is not None
    assert not np.array_equal(base.latents[2], shipped.latents[2])
    assert not np.array_equal(base.latents[0], first.latents[0])  # chunk 0 is guided
    assert first._guide is None  # dropped once no chunk needs it
    np.testing.assert_array_equal(base.latents[0], every.latents[0])  # chunk 0 is not ...
    assert not np.array_equal(base.latents[1], every.latents[1])  # ... the later chunks are
    assert every._guide is not None and len(every._guide.layers[0]) == tiny.cfg.n_prompt  # prompt only
    assert [len(layer) for layer in every.cache.layers] == [len(layer) for layer in base.cache.layers]
    # a prompt whose colours are all open has nothing to guide: identical frames
    p = "a circle and a square on blue stripes"
    a = Stepper(tiny, ae, p, 2, seed=3, sampler=SamplerConfig(first_guidance=1.0, guidance=1.0))
    b = Stepper(tiny, ae, p, 2, seed=3, sampler=SamplerConfig(first_guidance=3.0, guidance=3.0))
    for st in (a, b):
        list(st.run())
    np.testing.assert_array_equal(a.frames, b.frames)


def test_shape_guidance_composes_with_colour_guidance(tiny, ae):
    import torch

    from backend.config import SamplerConfig
    from backend.prompt import parse

    assert parse(PROMPT).shifted_shapes().objects == (("red", "square"), (None, "triangle"))
    off = SamplerConfig(first_guidance=1.0, guidance=1.0)
    base, _ = run(tiny, ae, seed=3, n=2, sampler=off)
    shaped, _ = run(tiny, ae, seed=3, n=2, sampler=SamplerConfig(first_guidance=1.0, guidance=1.0, shape_guidance=3.0))
    both, _ = run(tiny, ae, seed=3, n=2, sampler=SamplerConfig(shape_guidance=3.0))
    colour, _ = run(tiny, ae, seed=3, n=2)
    assert base._rebound is None and shaped._rebound is not None
    assert torch.equal(shaped.binding_condition, torch.tensor(parse(PROMPT).shifted_shapes().tokens()))
    assert not np.array_equal(base.latents, shaped.latents)  # it steers
    assert not np.array_equal(both.latents, shaped.latents) and not np.array_equal(both.latents, colour.latents)
    # the read-only reference pass leaves the cache as the unguided run has it
    assert [len(layer) for layer in shaped.cache.layers] == [len(layer) for layer in base.cache.layers]


def test_commits_record_only_the_attention_statistics_the_policy_reads(tiny, ae):
    """Window and Full read no statistics (their commits run the fused kernel and leave the counters at 0),
    H2O reads probabilities, Deep Forcing only raw q.k sums; asking for more changes no decision and no
    frame beyond float rounding."""
    from backend.policies import make_policy

    budget = tiny.cfg.n_prompt + 6 * tiny.cfg.tokens_per_frame  # Deep Forcing protects 5 frames
    levels = {}
    for name in ("full", "window", "h2o", "deep_forcing", "pafu"):
        pol = make_policy(name, budget=None if name == "full" else budget)
        levels[name] = pol.attention_stats
    assert levels == {"full": "none", "window": "none", "h2o": "probs", "deep_forcing": "logits", "pafu": "none"}
    assert make_policy("pafu", budget=budget, alpha=0.5).attention_stats == "probs"  # mixed with past attention
    assert make_policy("window", budget=budget, layer_split="cake").attention_stats == "probs"

    def go(name, attention=None):
        extra = {"sink_frames": 1} if name == "deep_forcing" else {}  # (its default sink is half the budget)
        st = Stepper(
            tiny,
            ae,
            PROMPT,
            10,
            seed=3,
            policy=make_policy(name, budget=budget, **extra),
            attention=attention,
            preview=False,
        )
        recs = list(st.run())
        kept = [r.kept for r in recs if r.phase == "evict"]
        return st, recs, kept

    st, recs, kept_plain = go("window")
    assert st.attention == "none"
    assert all(r.stats_ms == 0.0 for r in recs)
    assert all(float(s["attn_count"].abs().sum()) == 0 for s in st.observer.stats)
    st_all, _, kept_all = go("window", attention=True)
    assert st_all.attention == "probs" and all(float(s["attn_count"].min()) > 0 for s in st_all.observer.stats)
    assert all(all(np.array_equal(a, b) for a, b in zip(x, y)) for x, y in zip(kept_plain, kept_all))
    np.testing.assert_allclose(st.latents.numpy(), st_all.latents.numpy(), atol=1e-4)

    st, _, kept_logits = go("deep_forcing")
    assert st.attention == "logits"
    assert all(float(s["attn_count"].abs().sum()) == 0 for s in st.observer.stats)
    assert all(float(s["qk_hist"].abs().sum()) > 0 for s in st.observer.stats)
    st_p, _, kept_probs = go("deep_forcing", attention="probs")
    assert all(all(np.array_equal(a, b) for a, b in zip(x, y)) for x, y in zip(kept_logits, kept_probs))
    for a, b in zip(st.observer.stats, st_p.observer.stats):  # the same q.k sums whichever path computed them
        np.testing.assert_allclose(a["qk_hist"].numpy(), b["qk_hist"].numpy(), rtol=1e-5, atol=1e-5)


def test_attention_statistics_a_policy_reads_cannot_be_switched_off(tiny, ae):
    from backend.policies import make_policy

    budget = tiny.cfg.n_prompt + 6 * tiny.cfg.tokens_per_frame
    with pytest.raises(GenerationError, match="reads the 'probs' attention statistics"):
        Stepper(tiny, ae, PROMPT, 4, policy=make_policy("h2o", budget=budget), attention=False)
    with pytest.raises(GenerationError, match="'logits'"):
        Stepper(tiny, ae, PROMPT, 4, policy=make_policy("deep_forcing", budget=budget, sink_frames=1), attention="none")
    with pytest.raises(GenerationError, match="attention must be"):
        Stepper(tiny, ae, PROMPT, 4, attention="maybe")


def test_probe_queries_are_a_fixed_random_share_of_the_commit():
    from backend.models.attention import probe_queries

    assert probe_queries(64, 1.0, 3) is None
    idx = probe_queries(64, 0.125, 3)
    assert len(idx) == 8 and bool((idx[1:] > idx[:-1]).all()) and 0 <= int(idx.min()) and int(idx.max()) < 64
    assert np.array_equal(idx, probe_queries(64, 0.125, 3))  # seeded by the chunk
    assert not np.array_equal(idx, probe_queries(64, 0.125, 4))
    assert len(probe_queries(64, 0.001, 0)) == 1  # at least one query
    assert np.array_equal(probe_queries(64, 0.999, 5), np.arange(64))  # rounds to every query


def test_probe_statistics_count_only_the_probes_and_equal_the_full_path_on_every_query(tiny, ae):
    """With probe < 1 a commit records the statistics of that share of its queries (beside the fused
    kernel): each commit adds that many queries to attn_count, and a probe set that rounds to every query
    gives the explicit path's statistics (probabilities and raw q.k sums) to float rounding."""
    from backend.policies import make_policy

    cfg = tiny.cfg
    big = cfg.n_prompt + 40 * cfg.tokens_per_frame  # never evicts in 6 frames

    def go(**kw):
        st = Stepper(tiny, ae, PROMPT, 6, seed=2, policy=make_policy("h2o", budget=big, **kw), preview=False)
        recs = list(st.run())
        return st, recs

    full, _ = go(probe=1.0)
    probed, recs = go()  # H2O's default: 1/8 of the queries
    assert probed.policy.probe == 0.125
    m = round(0.125 * cfg.tokens_per_frame)
    for layer, s in zip(probed.cache.layers, probed.observer.stats):
        prompt = layer.meta["kind"] == KIND_PROMPT
        # the prompt prefill counts all its queries, then every commit m probes
        np.testing.assert_array_equal(s["attn_count"][prompt].numpy(), cfg.n_prompt + 6 * m)
    for a, b in zip(full.observer.stats, probed.observer.stats):
        assert not np.allclose(a["attn_sum"].numpy(), b["attn_sum"].numpy())
    np.testing.assert_allclose(full.latents.numpy(), probed.latents.numpy(), atol=1e-4)  # outputs: fused kernel
    every, _ = go(probe=0.999)
    for a, b in zip(full.observer.stats, every.observer.stats):
        for key in ("attn_sum", "attn_max", "attn_count", "recent", "qk_hist"):
            np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("probe", [0, -0.5, 1.5, True, "half"])
def test_bad_probe_shares(probe):
    from backend.policies import make_policy

    with pytest.raises(ValueError, match="probe must be"):
        make_policy("h2o", budget=1000, probe=probe)


def test_probe_of_one_keeps_the_bench_signature():
    """Results computed before probes existed (every query) stay valid: probe = 1 hashes as before; a policy
    whose default is a probe share hashes apart from its every-query runs."""
    from backend.bench.policies import policy_signature

    assert policy_signature("pafu:alpha=0.5;probe=1") == policy_signature("pafu:alpha=0.5")
    assert policy_signature("pafu:alpha=0.5;probe=0.125") != policy_signature("pafu:alpha=0.5")
    assert policy_signature("h2o") == policy_signature("h2o:probe=0.125") != policy_signature("h2o:probe=1")


def test_probes_apply_only_to_a_policy_that_reads_probabilities(tiny, ae):
    """Deep Forcing reads raw q.k sums over every query; recording probabilities for it (the explorer) with a
    probe share set must not turn its q.k sums into the probes' (its decisions would change)."""
    from backend.policies import make_policy

    budget = tiny.cfg.n_prompt + 6 * tiny.cfg.tokens_per_frame

    def kept(attention):
        st = Stepper(
            tiny,
            ae,
            PROMPT,
            10,
            seed=3,
            attention=attention,
            preview=False,
            policy=make_policy("deep_forcing", budget=budget, sink_frames=1, probe=0.125),
        )
        return st, [r.kept for r in st.run() if r.phase == "evict"]

    (st_a, a), (st_b, b) = kept(None), kept(True)
    assert st_b.attention == "probs"
    assert all(all(np.array_equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b))
    for la, lb in zip(st_a.observer.stats, st_b.observer.stats):
        np.testing.assert_allclose(la["qk_hist"].numpy(), lb["qk_hist"].numpy(), rtol=1e-5, atol=1e-5)


def test_the_readmes_stepper_example_runs(readme_python, capsys):
    """The README's Stepper example, verbatim but for 3 frames instead of 32."""
    code = readme_python[1]
    assert code.count("n_frames=32") == 1
    ns = {}
    exec(code.replace("n_frames=32", "n_frames=3"), ns)
    printed = capsys.readouterr().out
    assert ns["frames"].shape == (3, 64, 64, 3) and printed.count("commit") == 3 and "denoise" in printed


def test_the_readmes_new_policy_example_runs(readme_python, monkeypatch):
    """The README's new-policy example registers a scorer whose composition runs through the stepper."""
    from backend import policies as P
    from backend.loading import load_autoencoder, load_model

    monkeypatch.setattr(P, "POLICIES", dict(P.POLICIES))  # the example's registry line stays in this test
    ns = {}
    exec(readme_python[2], ns)
    pol = ns["policy"]
    assert pol.name == "oldest" and pol.period == 2 and pol.storage.storage == "int8"
    st = Stepper(load_model(), load_autoencoder(), "a red circle on blue stripes", 11, policy=pol, preview=False)
    last = [r for r in st.run() if r.phase == "evict"][-1]
    frames = set(((last.kept[0][last.kept[0] >= 7] - 7) // 64).tolist())
    assert {0, 1, 10} <= frames and (last.occupancy <= 7 + 8 * 64).all()
