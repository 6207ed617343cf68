"""Per-head caches: heads holding different tokens (Dummy Forcing, Forcing-KV) attend, count bytes, record and
plot exactly as if each head had its own ragged cache."""

import numpy as np
import pytest
import torch
from test_cache import filled

from backend.models.attention import fused_attention, head_bias, packed_attention
from backend.policies import make_policy
from backend.policies.dummy_forcing import DUMMY, NEIGHBOR, SINK, program_heads
from backend.policies.forcing_kv import static_heads
from backend.quant import pack_layer
from backend.record_io import pack_records, unpack_records
from backend.stepper import Stepper

PROMPT = "a red circle and a square on blue stripes behind a wall"


def held_layer(H=3, Dh=8):
    layer = filled(40, H=H, Dh=Dh)
    layer.meta["kind"] = torch.full((40,), 1)  # frame tokens (prompt anchors stay with every head)
    held = torch.ones(H, 40, dtype=torch.bool)
    held[0, :30] = False  # head 0: only the newest frame
    held[1, 10:20] = False  # head 1: all but frame 1
    layer.set_heads(held)
    return layer, held


def test_head_mask_round_trips_and_follows_the_keep():
    layer, held = held_layer()
    assert torch.equal(layer.head_mask(), held)
    assert layer.head_occupancy().tolist() == [10, 30, 40]
    _, source = layer.keep_map(torch.arange(5, 40))  # the holdings move with their tokens
    assert torch.equal(layer.head_mask(), held[:, source])
    with pytest.raises(ValueError, match="no head"):
        layer.set_heads(torch.zeros(3, len(layer), dtype=torch.bool))


def test_bytes_count_only_the_heads_that_hold_a_token_and_match_a_ragged_store():
    layer, held = held_layer(H=3, Dh=8)
    per_head_token = 2 * 8 * 4  # K and V, fp32
    assert layer.nbytes() == int(held.sum()) * per_head_token
    assert layer.nbytes() == sum(b.numel() * b.element_size() for b in pack_layer(layer))
    layer.set_dtype(torch.arange(20, 40), "int4", "token")
    layer.set_dtype(torch.arange(0, 10), "int8", "channel")
    assert layer.nbytes() == sum(b.numel() * b.element_size() for b in pack_layer(layer))


def test_packed_attention_equals_masked_attention_and_each_heads_own_cache():
    g = torch.Generator().manual_seed(1)
    H, n, new, Dh = 3, 30, 5, 8
    q, k, v = (torch.randn(H, x, Dh, generator=g) for x in (new, n + new, n + new))
    present = torch.rand(H, n, generator=g) > 0.4
    present[2] = True  # one head holds everything (no gather)
    out = packed_attention(q, k, v, present)
    masked = fused_attention(q, k, v, head_bias(present, new))
    torch.testing.assert_close(out, masked, atol=1e-5, rtol=1e-5)
    for h in range(H):  # each head as if its cache held only its own tokens
        cols = torch.cat([present[h].nonzero().flatten(), torch.arange(n, n + new)])
        alone = fused_attention(q[h : h + 1], k[h : h + 1, cols], v[h : h + 1, cols])
        torch.testing.assert_close(out[h : h + 1], alone, atol=1e-5, rtol=1e-5)


def test_dummy_forcing_programming_follows_the_code():
    # (L=1, H=4) shares over first, middle, previous, own
    shares = torch.tensor([[[0.6, 0.1, 0.1, 0.2], [0.0, 0.5, 0.3, 0.2], [0.02, 0.02, 0.06, 0.9], [0.3, 0.3, 0, 0.4]]])
    roles = program_heads(shares, 0.25)[0]
    assert roles[2] == DUMMY  # attends almost only to its own chunk
    assert roles[0] == SINK and roles[1] == NEIGHBOR
    assert (program_heads(shares, 0.5)[0] == DUMMY).sum() == 2


def test_forcing_kv_static_heads_by_share_of_non_sink_attention_on_the_newest_frames():
    shares = torch.tensor([[0.5, 0.05, 0.2, 0.25], [0.1, 0.5, 0.2, 0.2]])
    assert static_heads(shares, 0.8).tolist() == [True, False]  # 0.45 / 0.5 = 0.9 >= 0.8; 0.4 / 0.9 < 0.8


@pytest.mark.parametrize("name", ["dummy_forcing", "forcing_kv"])
def test_per_head_policies_run_within_their_byte_budget_and_record_head_occupancy(tiny, ae, name):
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    budget = P + 4 * tpf
    st = Stepper(tiny, ae, PROMPT, 12, seed=2, policy=make_policy(name, budget=budget), preview=False)
    recs = list(st.run())
    roles = st.observer.notes["head_roles"]
    assert roles is not None and len(roles)  # programmed once the budget filled
    evicts = [r for r in recs if r.phase == "evict"]
    assert all(r.heads is not None for r in evicts)
    last = evicts[-1]
    H = last.heads.shape[1]
    assert (last.heads.sum(1) <= budget * H).all()
    if name == "dummy_forcing":  # a quarter of the tiny model's 4 heads keeps no history
        assert (last.heads.min(1) < last.occupancy).any()
    per_head = 2 * tiny.cfg.head_dim * 4
    assert last.nbytes.tolist() == (last.heads.sum(1) * per_head).tolist()  # bytes of what each head holds
    again = unpack_records(pack_records(recs, tiny.cfg.n_layer))  # sessions keep the head occupancy
    assert np.array_equal(again[-1].heads, last.heads)


def test_per_head_policy_with_room_for_everything_equals_the_full_cache(tiny, ae):
    full = Stepper(tiny, ae, PROMPT, 8, seed=5, policy=make_policy("full"), preview=False)
    list(full.run())
    wide = Stepper(tiny, ae, PROMPT, 8, seed=5, policy=make_policy("dummy_forcing", budget=10_000), preview=False)
    list(wide.run())
    np.testing.assert_array_equal(full.frames, wide.frames)


def test_occupancy_figure_draws_each_head_where_heads_differ(tiny, ae):
    from explorer.figures import occupancy_figure
    from explorer.history import RunHistory

    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    st = Stepper(tiny, ae, PROMPT, 10, seed=2, policy=make_policy("dummy_forcing", budget=P + 3 * tpf), preview=False)
    h = RunHistory(tiny.cfg.n_layer, P, tpf, tiny.cfg.grid, tiny.cfg.chunk_frames, 10)
    for r in st.run():
        h.add_record(r)
    names = [t.name for t in occupancy_figure(h).data]
    assert any("head" in n for n in names)
    back = RunHistory.from_arrays(h.to_arrays())  # a saved session keeps them
    assert np.array_equal(back.arrays()["heads"], h.arrays()["heads"])
    plain = RunHistory(tiny.cfg.n_layer, P, tpf, tiny.cfg.grid, tiny.cfg.chunk_frames, 10)
    for r in Stepper(tiny, ae, PROMPT, 4, seed=2, policy=make_policy("window", budget=P + 3 * tpf)).run():
        plain.add_record(r)
    assert not any("head" in t.name for t in occupancy_figure(plain).data)
