"""The bedrock: a full-cache, chunk-by-chunk cached generation equals a block-causal full recompute."""

import dataclasses

import pytest
import torch

from backend.config import MODEL_PRESETS
from backend.models.dit import VideoDiT
from backend.policies import make_policy
from backend.stepper import Stepper


def randomised(cfg, seed=0):
    torch.manual_seed(seed)
    m = VideoDiT(cfg)
    with torch.no_grad():
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return m.eval()


@pytest.mark.parametrize("chunk_frames,n_frames,window", [(1, 6, 0), (2, 7, 0), (1, 7, 2), (2, 9, 2)])
def test_cached_generation_equals_full_recompute(ae, chunk_frames, n_frames, window):
    """window > 0: a window cache of `window` chunks equals the windowed teacher-forcing recompute the
    student trains on (model.teacher_forcing_mask), so the training mask is what inference computes."""
    cfg = dataclasses.replace(MODEL_PRESETS["tiny"], chunk_frames=chunk_frames)
    model = randomised(cfg)
    policy = make_policy("window", frames=window * chunk_frames) if window else make_policy("full")
    st = Stepper(
        model,
        ae,
        "a red circle and a square on blue stripes behind a wall",
        n_frames,
        seed=3,
        policy=policy,
        preview=False,
        trace_inputs=True,
    )
    list(st.run())
    prompt = st.condition[None]
    clean = st.latents[None]  # (1, T, C, g, g)
    T = n_frames
    worst = 0.0
    for k in range(len(st.ts_rest)):  # step k of every chunk, in one recompute
        steps = sorted((rec for rec in st.inputs if rec[1] == k), key=lambda r: r[0])
        noisy = torch.cat([x for (_, _, _, x, _) in steps])[None]  # chunk inputs at step k, in order
        v_cached = torch.cat([v for (_, _, _, _, v) in steps])[None]
        t = torch.tensor([tt for (c, _, tt, x, _) in steps for _ in range(len(x))])[None]  # per-frame levels
        with torch.no_grad():
            v_ref = model.teacher_forcing(prompt, clean, torch.zeros(1, T), noisy, t, window=window)
        worst = max(worst, (v_ref - v_cached).abs().max().item())
    assert worst <= 1e-4, worst
    assert v_cached.abs().mean() > 1e-2  # the comparison is not vacuous


def test_stats_path_equals_sdpa_path(tiny):
    from backend.models.attention import attention_with_stats

    q, k, v = torch.randn(2, 10, 16), torch.randn(2, 33, 16), torch.randn(2, 33, 16)
    out, colsum, colmax, logitsum = attention_with_stats(q, k, v, block=3)
    ref = torch.nn.functional.scaled_dot_product_attention(q[None], k[None], v[None])[0]
    assert torch.allclose(out, ref, atol=1e-5)
    p = (q @ k.transpose(1, 2) / 4).softmax(-1)
    assert torch.allclose(colsum, p.sum(1), atol=1e-5) and torch.allclose(colmax, p.amax(1), atol=1e-6)
    assert torch.allclose(colsum.sum(1), torch.full((2,), 10.0))
    assert torch.allclose(logitsum, (q @ k.transpose(1, 2) / 4).sum(1), atol=1e-4)


def test_prompt_substitute_swaps_exactly_the_cached_prompt_slots():
    """Guidance's reference pass (forward_chunk condition_kv): substituting the same prompt changes nothing,
    even after prompt tokens were evicted; on an empty context it equals a cache prefilled with the other
    prompt; commits refuse it."""
    from backend.cache import KVCache
    from backend.prompt import parse

    cfg = MODEL_PRESETS["tiny"]
    model = randomised(cfg, seed=1)
    spec = parse("a red circle and a blue square on green stripes")
    tok, other = torch.tensor(spec.tokens()), torch.tensor(spec.open_colours().tokens())

    def prefilled(tokens):
        c = KVCache(cfg.n_layer, cfg.n_head, cfg.head_dim)
        model.prefill(tokens, c)
        return c

    x, t = torch.randn(1, cfg.latent_ch, cfg.grid, cfg.grid), torch.full((1,), 0.7)
    main, same, alt = prefilled(tok), prefilled(tok), prefilled(other)
    assert torch.allclose(
        model.forward_chunk(x, t, 0, main, condition_kv=alt), model.forward_chunk(x, t, 0, alt), atol=1e-6
    )
    for f in range(3):
        model.forward_chunk(torch.randn_like(x), torch.zeros(1), f, main, commit=True)
    for layer in main.layers:  # evict two prompt slots and a few frame tokens
        layer.keep(torch.tensor([0, 2, 3] + list(range(cfg.n_prompt + 1, len(layer), 2))))
    plain = model.forward_chunk(x, t, 3, main)
    assert torch.allclose(model.forward_chunk(x, t, 3, main, condition_kv=same), plain, atol=1e-6)
    assert (model.forward_chunk(x, t, 3, main, condition_kv=alt) - plain).abs().max() > 1e-4
    with pytest.raises(ValueError, match="read-only"):
        model.forward_chunk(x, torch.zeros(1), 3, main, commit=True, condition_kv=alt)


def test_rope_tables_and_complex_rotation_equal_the_direct_formula():
    """rope_angles' per-axis tables (grown on demand) and apply_rope's complex product give the very bits of
    evaluating cos/sin per token and rotating the pairs apart; negative positions take the direct path."""
    from backend.rope import apply_rope, rope_angles

    cfg = MODEL_PRESETS["default"]

    def direct(pos):
        ang = torch.cat(
            [
                pos[:, a, None].double() * (th ** (-torch.arange(0, d, 2, dtype=torch.float64) / d))[None]
                for a, (d, th) in enumerate(zip(cfg.rope_split, cfg.rope_theta))
            ],
            dim=1,
        )
        return ang.cos().float(), ang.sin().float()

    g = torch.Generator().manual_seed(0)
    for lo, hi in ((0, 8), (0, 3000), (-20, 50)):  # in the first table, past it, negative
        pos = torch.randint(lo, hi, (500, 3), generator=g)
        (c, s), (c0, s0) = rope_angles(pos, cfg), direct(pos)
        assert torch.equal(c, c0) and torch.equal(s, s0)
        x = torch.randn(2, cfg.n_head, 500, cfg.head_dim, generator=g)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        pairwise = torch.stack((x1 * c0 - x2 * s0, x1 * s0 + x2 * c0), dim=-1).flatten(-2)
        assert torch.equal(apply_rope(x, c, s), pairwise)
        assert torch.equal(apply_rope(x.transpose(-1, -2).contiguous().transpose(-1, -2), c, s), pairwise)
