"""KV cache with per-token metadata, per-token storage dtype and exact byte accounting.

Per layer: K and V ``[H, n, Dh]`` (keys *un-rotated*), plus aligned per-token metadata (frame, y, x,
kind, RoPE position, birth chunk, token id, merge count, storage dtype, the heads that dropped it): what the
cache itself needs to store, rotate, attend and count bytes. A token some heads dropped (`gone`) stays in the
(H, n, Dh) layout for the heads that hold it; attention masks it out of the others and the byte count holds
only the heads that keep it (what a ragged per-head store would hold). Every mutation (append / keep /
set_positions / quantize) keeps all of them aligned; what a policy observes about the tokens (attention
statistics, predicted salience) is the policy's own (`observe.Observer`), compacted with the map `keep_map`
returns.
Storage dtypes, quantisation and byte counts live in `quant.py`; the metadata fields and their packing in `meta.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .meta import KIND_FRAME, KIND_PROMPT, META_FIELDS, Meta, as_meta  # noqa: F401 (the cache's public names)
from .quant import DTYPES, QUANT_SCHEMES, SCALE_BYTES, _own_bytes_table, hadamard, quantize, quantize_channels


def _move(x: torch.Tensor, dim: int, dst: np.ndarray, src: np.ndarray) -> None:
    """x[dst] = x[src] along `dim` (0 or 1), in place: through a numpy view on the CPU (a smaller fixed cost per
    call than index_copy_, and compaction is a dozen such calls per layer), with torch elsewhere."""
    if x.device.type == "cpu":
        xn = x.numpy()
        if dim:
            xn[:, dst] = xn[:, src]
        else:
            xn[dst] = xn[src]
    else:
        x.index_copy_(dim, torch.from_numpy(dst).to(x.device), x.index_select(dim, torch.from_numpy(src).to(x.device)))


def inverse_norms(k: torch.Tensor) -> torch.Tensor:
    """1 / |k_i| over the concatenated heads: k (H, n, Dh) -> (n,) float32 (numpy's einsum on a view: no
    squared copy of the keys)."""
    kn = k.detach().float().numpy()
    return torch.from_numpy(1.0 / np.maximum(np.sqrt(np.einsum("hnd,hnd->n", kn, kn)), 1e-12))


@dataclass
class LayerCache:
    k: torch.Tensor  # (H, n, Dh), un-rotated keys
    v: torch.Tensor  # (H, n, Dh)
    meta: Meta  # each field (n, ...); a plain dict of every field is packed
    _krot: torch.Tensor | None = None  # memo of rotated keys (H, n, Dh): kept through append / keep,
    # dropped when keys or positions change
    _rotate: object = None  # the rotation the memo was made with ((k, pos) -> rotated k)
    _inv: torch.Tensor | None = None  # memo of 1 / |k_i| over the concatenated heads (n,): kept through
    # append / keep, dropped when keys change (RoPE leaves norms alone)
    next_group: int = 0  # id of the next `channel` quantisation group
    _stale: np.ndarray | None = None  # (n,) tokens whose memo entry waits for `settle` (their key or position
    # changed): rotated together, once, however many merges, memory writes and re-positionings touched them;
    # None while nothing waits (set only with a memo)

    def __post_init__(self):
        self.meta = as_meta(self.meta)

    @classmethod
    def empty(cls, n_head: int, head_dim: int) -> LayerCache:
        z = torch.zeros(n_head, 0, head_dim)
        return cls(z, z.clone(), Meta.zeros())

    def __len__(self) -> int:
        return self.k.shape[1]

    # --- mutations (all keep metadata aligned with K/V) ---
    def append(
        self, k: torch.Tensor, v: torch.Tensor, meta: dict[str, torch.Tensor], k_rot: torch.Tensor | None = None
    ) -> None:
        """Add tokens k, v (H, n, Dh) with their metadata; `k_rot` (the same keys rotated by meta["pos"], as
        attention just computed them) extends the rotated-key memo instead of dropping it."""
        n = k.shape[1]
        full = Meta.zeros(n)
        full["count"].fill_(1.0)
        for key, val in meta.items():
            full[key] = val  # rejects unknown fields, casts, reshapes
        self.k = torch.cat([self.k, k.detach()], dim=1)
        self.v = torch.cat([self.v, v.detach()], dim=1)
        self.meta = self.meta.cat(full)
        self._krot = None if self._krot is None or k_rot is None else torch.cat([self._krot, k_rot.detach()], 1)
        if self._krot is None:
            self._stale = None
        elif self._stale is not None:
            self._stale = np.concatenate([self._stale, np.zeros(n, dtype=bool)])
        if self._inv is not None:
            self._inv = torch.cat([self._inv, inverse_norms(k)])

    def keep(self, idx: torch.Tensor) -> torch.Tensor:
        """Keep the tokens at positions idx, evict the rest; returns the token ids evicted. See `keep_map`."""
        return self.keep_map(idx)[0]

    def keep_map(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the tokens at positions idx; returns (token ids evicted, source (m,): the old position of each
        kept token's new position).

        Order-free compaction: the kept tokens stored past the new length move into the evicted slots below it
        and the layer is truncated, so an eviction copies as many tokens as it evicts instead of the whole
        layer (the copy was most of the eviction step on this small model). Cache order is therefore not
        time order: attention is order-invariant (up to float summation order) and every tie-break that
        wants "newer" reads `token_id`, never a position."""
        idx = torch.as_tensor(idx, dtype=torch.long).numpy()  # index bookkeeping in numpy: a few
        n = len(self)  # microseconds less per op, ~20 ops
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f"keep index out of range 0..{n - 1}")
        gone = np.ones(n, dtype=bool)
        gone[idx] = False
        m = n - int(gone.sum())
        evicted = torch.from_numpy(self.meta["token_id"].numpy()[gone])
        holes = np.flatnonzero(gone[:m])  # evicted slots below the new length
        movers = np.flatnonzero(~gone[m:]) + m  # kept tokens above it (as many)
        src = np.arange(m)
        if len(holes):
            src[holes] = movers
            tensors = [self.k, self.v] + ([self._krot] if self._krot is not None else [])  # (H, n, Dh)
            rows = list(self.meta.packs.values()) + ([self._inv] if self._inv is not None else [])  # (n, ...)
            for x, dim in [(x, 1) for x in tensors] + [(x, 0) for x in rows]:  # in place, |holes| tokens
                _move(x, dim, holes, movers)
            if self._stale is not None:
                self._stale[holes] = self._stale[movers]
        source = torch.from_numpy(src)
        self.k, self.v = self.k[:, :m], self.v[:, :m]
        self.meta = Meta({dt: p[:m] for dt, p in self.meta.packs.items()})
        if self._krot is not None:  # positions unchanged: the memo stays valid
            self._krot = self._krot[:, :m]
        if self._stale is not None:
            self._stale = self._stale[:m]
        if self._inv is not None:
            self._inv = self._inv[:m]
        return evicted, source

    def merge(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """Merge tokens src[i] into dst[i] (TempCache): dst keeps its key and position, its value becomes the
        count-weighted mean and its count the sum; src tokens are dropped. Returns the token ids merged away."""
        gone = self.merge_values(src, dst)
        return self.keep((~gone).nonzero().flatten()) if bool(gone.any()) else torch.zeros(0, dtype=torch.long)

    def merge_values(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """The value and count half of `merge`, in place; the src tokens stay, with count 0 (merged away), until
        the caller's next `keep`. Returns a (n,) mask of the src tokens."""
        src = torch.as_tensor(src, dtype=torch.long).numpy()  # index bookkeeping in numpy
        dst = torch.as_tensor(dst, dtype=torch.long).numpy()
        gone = np.zeros(len(self), dtype=bool)
        if len(src) == 0:
            return torch.from_numpy(gone)
        gone[src] = True
        if gone[dst].any() or int(gone.sum()) != len(src):
            raise ValueError("merge: a token cannot be both merged away and a target, or merged twice")
        cnt = self.meta["count"]
        is_tgt = np.zeros(len(self), dtype=bool)  # only the targets change
        is_tgt[dst] = True
        tgt = torch.from_numpy(np.flatnonzero(is_tgt))  # (m,) ascending
        slot = torch.from_numpy((np.cumsum(is_tgt) - 1)[dst])  # each src's target slot
        src = torch.from_numpy(src)
        vsum = self.v.index_select(1, tgt) * cnt[tgt][None, :, None]  # (H, m, Dh) count-weighted
        vsum.index_add_(1, slot, self.v.index_select(1, src) * cnt[src][None, :, None])
        tgt_cnt = cnt[tgt].index_add(0, slot, cnt[src])
        self.v.index_copy_(1, tgt, vsum / tgt_cnt[None, :, None])
        cnt.index_copy_(0, tgt, tgt_cnt)  # the packed column, in place
        cnt.index_fill_(0, src, 0.0)  # merged away: nothing left to count
        return torch.from_numpy(gone)

    def assign(self, idx: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Overwrite the keys and values of the tokens at positions idx (m,) with k, v (H, m, Dh): merged or
        memory tokens (FadeMem, MemRoPE). Their metadata stays; the rotated-key memo is updated for them."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        self.k.index_copy_(1, idx, k.to(self.k.dtype))
        self.v.index_copy_(1, idx, v.to(self.v.dtype))
        self._mark_stale(idx.numpy())
        self._inv = None

    def set_positions(self, pos: torch.Tensor) -> None:
        """Replace the RoPE positions (n, 3) the keys are rotated with (shift / re-index modes). The
        rotated-key memo is updated for the tokens whose position changed (rotation is per token, so this
        equals re-rotating every key), at once: the policy that moved them pays for it in its eviction step."""
        new = pos.to(torch.int64).reshape(len(self), 3)
        if self._krot is not None:
            self._mark_stale(np.flatnonzero((new.numpy() != self.meta["pos"].numpy()).any(1)))
        self.meta["pos"] = new

    def _mark_stale(self, idx: np.ndarray) -> None:
        """Tokens idx changed key or position: their memo entries wait for `settle` (no memo: nothing to do)."""
        if self._krot is None or self._rotate is None:
            self._krot = self._stale = None
            return
        if len(idx) == 0:
            return
        if self._stale is None:
            self._stale = np.zeros(len(self), dtype=bool)
        self._stale[idx] = True

    def settle(self) -> None:
        """Re-rotate every token whose key or position changed since the last settle (see `settle`)."""
        settle([self])

    def set_dtype(self, idx: torch.Tensor, name: str, scheme: str = "channel") -> None:
        """Store tokens idx at dtype `name` (a round trip from their current values); integer formats use the
        quantisation `scheme` (QUANT_SCHEMES; with `channel` the tokens form one key-scale group)."""
        code, bits = DTYPES[name]
        if scheme not in QUANT_SCHEMES:
            raise ValueError(f"quantisation scheme must be one of {', '.join(QUANT_SCHEMES)}, got {scheme!r}")
        idx = torch.as_tensor(idx, dtype=torch.long)
        if len(idx) == 0:
            return
        if name in ("int8", "int4", "int2"):
            if scheme in ("channel", "hadamard"):
                k, v = self.k.index_select(1, idx), self.v.index_select(1, idx)  # (H, m, Dh)
                rot = hadamard(k.shape[2]) if scheme == "hadamard" else None
                if rot is not None:
                    k, v = k @ rot, v @ rot
                k, v = quantize_channels(k, bits), quantize(v, bits, per_head=True)
                if rot is not None:  # H orthonormal: H^-1 = H^T
                    k, v = k @ rot.T, v @ rot.T
                self.k.index_copy_(1, idx, k)
                self.v.index_copy_(1, idx, v)
                self.meta["qgroup"][idx] = self.next_group
                self.next_group += 1
            else:
                for x in (self.k, self.v):
                    x.index_copy_(1, idx, quantize(x.index_select(1, idx), bits))
                self.meta["qgroup"][idx] = -1
        elif name == "bf16":
            for x in (self.k, self.v):
                x.index_copy_(1, idx, x.index_select(1, idx).bfloat16().float())
        self.meta["dtype"][idx] = code
        self._krot = self._inv = self._stale = None

    # --- reads ---
    def view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(K un-rotated (H, n, Dh), V (H, n, Dh), RoPE positions (n, 3)) of the tokens held."""
        return self.k, self.v, self.meta["pos"]

    def rotated_keys(self, rotate) -> torch.Tensor:
        """Keys rotated by their stored positions (memoised until the next change)."""
        if self._krot is None:
            self._krot, self._rotate, self._stale = rotate(self.k, self.meta["pos"]), rotate, None
        self.settle()
        return self._krot

    def inverse_key_norms(self) -> torch.Tensor:
        """1 / |k_i| of each token's key over the concatenated heads (n,) float32 (memoised until the keys
        change; rotated keys have the same norms up to float rounding). FlowCache's redundancy and
        TempCache's cosine search read it after every commit."""
        if self._inv is None:
            self._inv = inverse_norms(self.k)
        return self._inv

    def nbytes(self) -> int:
        """Exact bytes of the layer: each token's own bytes for the heads that hold it, K and V together (codes
        and per-token scales; counted per (dtype, grouped, heads held) class), plus the fp16 per-channel key
        scales of every `channel` group that still has a quantised token (shared by the group, counted once,
        for every head). In numpy: every StepRecord reads it."""
        H, _, Dh = self.k.shape
        dt, qg = self.meta["dtype"].numpy().astype(np.int64), self.meta["qgroup"].numpy()
        cls = dt * 2 + (qg >= 0)  # (dtype, grouped) class of each token
        held = self.heads_held()
        if held is None:
            own = int(np.bincount(cls, minlength=2 * len(DTYPES)) @ _own_bytes_table(H, Dh).numpy().reshape(-1))
        else:
            own = 0
            for c in np.unique(held):
                counts = np.bincount(cls[held == c], minlength=2 * len(DTYPES))
                own += int(counts @ _own_bytes_table(int(c), Dh).numpy().reshape(-1))
        groups = np.unique(qg[(dt >= DTYPES["int8"][0]) & (qg >= 0)])
        return own + len(groups) * H * Dh * SCALE_BYTES

    # --- per-head holdings (per-head policies) ---
    def head_mask(self) -> torch.Tensor | None:
        """(H, n) bool: which heads hold each token; None when every head holds every token (the common
        case, checked in numpy)."""
        gone = self.meta["gone"].numpy()
        if not gone.any():
            return None
        bits = np.int64(1) << np.arange(self.k.shape[0], dtype=np.int64)  # (H,)
        return torch.from_numpy((gone[None, :] & bits[:, None]) == 0)

    def heads_held(self) -> np.ndarray | None:
        """(n,) how many heads hold each token; None when every head holds every token."""
        mask = self.head_mask()
        return None if mask is None else mask.numpy().sum(0)

    def head_occupancy(self) -> np.ndarray:
        """(H,) tokens each head holds."""
        mask = self.head_mask()
        return np.full(self.k.shape[0], len(self)) if mask is None else mask.numpy().sum(1)

    def set_heads(self, held: torch.Tensor) -> None:
        """Which heads hold each token: held (H, n) bool, every token held by at least one head and the prompt
        anchors by all (a per-head policy's keep)."""
        held = held.numpy()
        if not held.any(0).all():
            raise ValueError("a token no head holds must be evicted, not kept")
        gone = ((~held).astype(np.int64) << np.arange(held.shape[0], dtype=np.int64)[:, None]).sum(0)
        if (gone[self.meta["kind"].numpy() == KIND_PROMPT] != 0).any():
            raise ValueError("prompt anchors are held by every head")
        self.meta["gone"] = torch.from_numpy(gone)

    def drop_heads(self, idx: torch.Tensor, heads: torch.Tensor) -> None:
        """Heads `heads` (H,) bool stop holding the tokens at positions `idx` (their K/V stay in the layout for
        the heads that keep them). Prompt anchors stay with every head (the guidance passes swap them)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        if len(idx) == 0 or not bool(heads.any()):
            return
        if bool((self.meta["kind"][idx] == KIND_PROMPT).any()):
            raise ValueError("prompt anchors are held by every head")
        bits = int(sum(1 << h for h in heads.nonzero().flatten().tolist()))
        self.meta["gone"][idx] = self.meta["gone"][idx] | bits

    def clone(self) -> LayerCache:
        return LayerCache(self.k.clone(), self.v.clone(), self.meta.clone(), next_group=self.next_group)


def settle(layers: list[LayerCache]) -> None:
    """Re-rotate the tokens of `layers` whose key or position changed since their last settle, in one call for
    all of them (rotation is per token, so this equals re-rotating every key, and one call costs a fraction of
    one per layer). A policy's eviction step settles the cache it touched, so it pays for its own re-rotations
    (merges, memory writes, moved positions); reads settle their layer first."""
    todo = [(x, torch.from_numpy(np.flatnonzero(x._stale))) for x in layers if x._stale is not None]
    for x, ch in todo:
        if len(ch) == 0:  # the waiting tokens were evicted
            x._stale = None
    todo = [(x, ch) for x, ch in todo if len(ch)]
    if not todo:
        return
    groups: dict = {}  # layers rotated the same way share one call
    for x, ch in todo:
        groups.setdefault(x._rotate, []).append((x, ch))
    for group in groups.values():
        dev = group[0][0].k.device  # keys may live on an accelerator; metadata stays on the CPU
        k = torch.cat([x.k.index_select(1, ch.to(dev)) for x, ch in group], 1)  # (H, sum m, Dh)
        pos = torch.cat([x.meta["pos"].index_select(0, ch) for x, ch in group])
        rot = group[0][0]._rotate(k, pos).split([len(ch) for _, ch in group], 1)
        for (x, ch), r in zip(group, rot):
            x._krot.index_copy_(1, ch.to(dev), r)
            x._stale = None  # nothing waits


class KVCache:
    """One LayerCache per transformer layer; `clone()` branches a run (compare from the same prefix)."""

    def __init__(self, n_layer: int, n_head: int, head_dim: int):
        self.layers = [LayerCache.empty(n_head, head_dim) for _ in range(n_layer)]
        self.condition = None  # a cross-attention model's projected condition (Wan: the text), never evicted

    def occupancy(self) -> list[int]:
        return [len(layer) for layer in self.layers]

    def nbytes(self) -> list[int]:
        return [layer.nbytes() for layer in self.layers]

    def head_occupancy(self) -> np.ndarray:
        """(L, H) tokens each head of each layer holds."""
        return np.stack([layer.head_occupancy() for layer in self.layers])

    def clone(self) -> KVCache:
        new = KVCache.__new__(KVCache)
        new.layers = [layer.clone() for layer in self.layers]
        new.condition = self.condition  # read-only
        return new
