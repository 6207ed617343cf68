"""KV cache with per-token metadata, per-token storage dtype and exact byte accounting.

Per layer: K and V ``[H, n, Dh]`` (keys *un-rotated*), plus aligned per-token metadata (frame, y, x,
kind, RoPE position, birth chunk, token id, attention statistics, predicted salience, merge count,
storage dtype). Every mutation (append / keep / set_positions / quantize) keeps all of them aligned.

Quantised tokens (int8 / int4 / int2, per-token asymmetric min-max with an fp16 scale and zero point
for K and for V) are held dequantised in fp32 for compute, as most KV-quantisation studies simulate
them; ``nbytes`` reports the packed size, and ``pack_layer`` builds the packed buffers to prove it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# storage dtype codes: name -> (code, bits); int formats carry an fp16 scale + zero per token per tensor
DTYPES = {"fp32": (0, 32), "bf16": (1, 16), "int8": (2, 8), "int4": (3, 4), "int2": (4, 2)}
CODE_BITS = torch.tensor([32, 16, 8, 4, 2])
SCALE_BYTES = 4  # fp16 scale + fp16 zero point, per token, for K and again for V

META_FIELDS = {  # name -> (dtype, trailing shape)
    "frame": (torch.int64, ()), "y": (torch.int64, ()), "x": (torch.int64, ()),
    "kind": (torch.int8, ()),             # 0 prompt, 1 frame
    "pos": (torch.int64, (3,)),           # RoPE position (t, y, x) used at attention time
    "birth": (torch.int64, ()),           # chunk index at which the token was committed
    "token_id": (torch.int64, ()),        # stable id: prompt slot, or n_prompt + frame * T + y * g + x
    "attn_sum": (torch.float32, ()),      # accumulated attention (head mean, sum over queries)
    "attn_max": (torch.float32, ()),      # max attention received from any query (head mean)
    "attn_count": (torch.float32, ()),    # number of queries that could attend to the token
    "recent": (torch.float32, ()),        # mean attention from the newest committed chunk's queries
    "pred": (torch.float32, ()),          # predicted salience (PaFu-KV head), if any
    "count": (torch.float32, ()),         # merge count (TempCache); 1 for plain tokens
    "qk_hist": (torch.float32, (4,)),     # mean raw logit q.k/sqrt(d) from each of the last 4 commits (ring)
    "dtype": (torch.int8, ()),            # storage dtype code (DTYPES)
}
KIND_PROMPT, KIND_FRAME = 0, 1
QK_HISTORY = 4   # commits remembered in qk_hist (Deep Forcing's R recent frames at chunk size 1)


def _layout() -> tuple[dict[torch.dtype, list[tuple[str, int, tuple]]], dict[torch.dtype, int]]:
    """Fields grouped by dtype: dtype -> [(name, first column, trailing shape)] in one packed tensor, and
    dtype -> that tensor's width (columns)."""
    layout: dict[torch.dtype, list] = {}
    width: dict[torch.dtype, int] = {}
    for name, (dt, shape) in META_FIELDS.items():
        start = width.get(dt, 0)
        layout.setdefault(dt, []).append((name, start, shape))
        width[dt] = start + (shape[0] if shape else 1)
    return layout, width


LAYOUT, WIDTH = _layout()


class Meta(dict):
    """Per-token metadata: a dict of field -> (n, ...) tensors that are column views into one packed
    (n, width) tensor per dtype, so keep / append / clone move three tensors instead of fifteen (the
    eviction step is mostly this bookkeeping on a small model). Reading, in-place updates and item
    assignment work as on a dict of tensors; assigning a field writes its columns (cast to its dtype)."""

    def __init__(self, packs: dict[torch.dtype, torch.Tensor]):
        super().__init__()
        self.packs = packs
        for dt, cols in LAYOUT.items():
            p = packs[dt]
            for name, start, shape in cols:
                dict.__setitem__(self, name, p[:, start] if not shape else p[:, start:start + shape[0]])

    @classmethod
    def zeros(cls, n: int = 0) -> "Meta":
        return cls({dt: torch.zeros(n, w, dtype=dt) for dt, w in WIDTH.items()})

    def __setitem__(self, key: str, val) -> None:
        if key not in META_FIELDS:
            raise KeyError(f"unknown metadata field {key!r}")
        col = dict.__getitem__(self, key)
        if val is not col:                                   # `m[k] += x` already wrote in place
            val = torch.as_tensor(val)
            col.copy_(val.reshape(col.shape) if val.numel() == col.numel() else val)

    def __reduce__(self):
        return Meta, (self.packs,)

    def index_select(self, idx: torch.Tensor) -> "Meta":
        return Meta({dt: p.index_select(0, idx) for dt, p in self.packs.items()})

    def cat(self, other: "Meta") -> "Meta":
        return Meta({dt: torch.cat([p, other.packs[dt]]) for dt, p in self.packs.items()})

    def clone(self) -> "Meta":
        return Meta({dt: p.clone() for dt, p in self.packs.items()})


def as_meta(meta) -> Meta:
    """A Meta from a Meta or a plain dict of every field (e.g. built by hand in a test)."""
    if isinstance(meta, Meta):
        return meta
    n = len(next(iter(meta.values()))) if meta else 0
    out = Meta.zeros(n)
    for key, val in meta.items():
        out[key] = val
    return out


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-token asymmetric min-max round-trip of x [H, n, Dh] (token = all heads and dims) at `bits`."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)                          # (n, H*Dh)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    lo, hi = lo.half().float(), hi.half().float()                              # stored as fp16
    scale = ((hi - lo) / (2 ** bits - 1)).clamp_min(1e-8)
    q = ((flat - lo) / scale).round().clamp(0, 2 ** bits - 1)
    deq = q * scale + lo
    return deq.reshape(x.shape[1], x.shape[0], x.shape[2]).transpose(0, 1).contiguous()


def quant_error_bound(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Worst-case per-token abs error of `quantize`: half a step plus fp16 rounding of the range."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    rng = flat.max(1).values - flat.min(1).values
    return rng / (2 ** bits - 1) / 2 + 2e-3 * flat.abs().max(1).values + 1e-6


@dataclass
class LayerCache:
    k: torch.Tensor                     # (H, n, Dh), un-rotated keys
    v: torch.Tensor                     # (H, n, Dh)
    meta: Meta                          # each field (n, ...); a plain dict of every field is packed
    _krot: torch.Tensor | None = None   # memo of rotated keys (H, n, Dh): kept through append / keep,
                                        # dropped when keys or positions change

    def __post_init__(self):
        self.meta = as_meta(self.meta)

    @classmethod
    def empty(cls, n_head: int, head_dim: int) -> "LayerCache":
        z = torch.zeros(n_head, 0, head_dim)
        return cls(z, z.clone(), Meta.zeros())

    def __len__(self) -> int:
        return self.k.shape[1]

    # --- mutations (all keep metadata aligned with K/V) ---
    def append(self, k: torch.Tensor, v: torch.Tensor, meta: dict[str, torch.Tensor],
               k_rot: torch.Tensor | None = None) -> None:
        """Add tokens k, v (H, n, Dh) with their metadata; `k_rot` (the same keys rotated by meta["pos"], as
        attention just computed them) extends the rotated-key memo instead of dropping it."""
        n = k.shape[1]
        full = Meta.zeros(n)
        full["count"].fill_(1.0)
        for key, val in meta.items():
            full[key] = val                                   # rejects unknown fields, casts, reshapes
        self.k = torch.cat([self.k, k.detach()], dim=1)
        self.v = torch.cat([self.v, v.detach()], dim=1)
        self.meta = self.meta.cat(full)
        self._krot = None if self._krot is None or k_rot is None else torch.cat([self._krot, k_rot.detach()], 1)

    def keep(self, idx: torch.Tensor) -> torch.Tensor:
        """Keep tokens at positions idx (kept in cache order); returns the token ids evicted."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        if len(idx) > 1 and not bool((idx[1:] > idx[:-1]).all()):     # the selectors already pass sorted ids
            idx = idx.unique(sorted=True)
        if len(idx) and (idx[0] < 0 or idx[-1] >= len(self)):
            raise IndexError(f"keep index out of range 0..{len(self) - 1}")
        mask = torch.ones(len(self), dtype=torch.bool)
        mask[idx] = False
        evicted = self.meta["token_id"][mask]
        # index_select copies (no aliasing) and is several times faster than advanced indexing on dim 1
        self.k, self.v = self.k.index_select(1, idx), self.v.index_select(1, idx)
        self.meta = self.meta.index_select(idx)
        if self._krot is not None:                                      # positions unchanged: the memo stays valid
            self._krot = self._krot.index_select(1, idx)
        return evicted

    def merge(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """Merge tokens src[i] into dst[i] (TempCache): dst keeps its key and position, its value becomes the
        count-weighted mean and its count the sum; src tokens are dropped. Returns the token ids merged away."""
        src, dst = torch.as_tensor(src, dtype=torch.long), torch.as_tensor(dst, dtype=torch.long)
        if len(src) == 0:
            return torch.zeros(0, dtype=torch.long)
        if bool(torch.isin(src, dst).any()) or len(src.unique()) != len(src):
            raise ValueError("merge: a token cannot be both merged away and a target, or merged twice")
        cnt = self.meta["count"]
        tgt, slot = dst.unique(return_inverse=True)                           # only the targets change
        vsum = self.v.index_select(1, tgt) * cnt[tgt][None, :, None]          # (H, m, Dh) count-weighted
        vsum.index_add_(1, slot, self.v.index_select(1, src) * cnt[src][None, :, None])
        tgt_cnt = cnt[tgt].index_add(0, slot, cnt[src])
        self.v = self.v.index_copy(1, tgt, vsum / tgt_cnt[None, :, None])
        self.meta["count"] = cnt.index_copy(0, tgt, tgt_cnt)                  # writes the packed column
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[src] = False
        return self.keep(keep.nonzero().flatten())

    def set_positions(self, pos: torch.Tensor) -> None:
        """Replace the RoPE positions (n, 3) the keys are rotated with (shift / re-index modes)."""
        self.meta["pos"] = pos.to(torch.int64).reshape(len(self), 3)
        self._krot = None

    def set_dtype(self, idx: torch.Tensor, name: str) -> None:
        """Store tokens idx at dtype `name` (a round trip from their current values)."""
        code, bits = DTYPES[name]
        idx = torch.as_tensor(idx, dtype=torch.long)
        if len(idx) == 0:
            return
        if name in ("int8", "int4", "int2"):
            for x in (self.k, self.v):
                x.index_copy_(1, idx, quantize(x.index_select(1, idx), bits))
        elif name == "bf16":
            for x in (self.k, self.v):
                x.index_copy_(1, idx, x.index_select(1, idx).bfloat16().float())
        self.meta["dtype"][idx] = code
        self._krot = None

    # --- reads ---
    def view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(K un-rotated (H, n, Dh), V (H, n, Dh), RoPE positions (n, 3)) of the tokens held."""
        return self.k, self.v, self.meta["pos"]

    def rotated_keys(self, rotate) -> torch.Tensor:
        """Keys rotated by their stored positions (memoised until the next change)."""
        if self._krot is None:
            self._krot = rotate(self.k, self.meta["pos"])
        return self._krot

    def token_bytes(self) -> torch.Tensor:
        """Bytes each token occupies, K and V together: (n,) int64."""
        H, _, Dh = self.k.shape
        bits = CODE_BITS[self.meta["dtype"].long()]
        per = (H * Dh * bits + 7) // 8 + torch.where(bits < 16, SCALE_BYTES, 0)
        return 2 * per

    def nbytes(self) -> int:
        return int(self.token_bytes().sum())

    def clone(self) -> "LayerCache":
        return LayerCache(self.k.clone(), self.v.clone(), self.meta.clone())


class KVCache:
    """One LayerCache per transformer layer; `clone()` branches a run (compare from the same prefix)."""

    def __init__(self, n_layer: int, n_head: int, head_dim: int):
        self.layers = [LayerCache.empty(n_head, head_dim) for _ in range(n_layer)]

    def occupancy(self) -> list[int]:
        return [len(layer) for layer in self.layers]

    def nbytes(self) -> list[int]:
        return [layer.nbytes() for layer in self.layers]

    def clone(self) -> "KVCache":
        new = KVCache.__new__(KVCache)
        new.layers = [layer.clone() for layer in self.layers]
        return new


def pack_layer(layer: LayerCache) -> list[torch.Tensor]:
    """Packed storage of a layer as real byte buffers (for verifying `nbytes`): fp32 / bf16 values,
    int codes packed 8 / 2 / 4 per byte, and fp16 scale + zero point per int token."""
    bufs = []
    for x in (layer.k, layer.v):
        for name, (code, bits) in DTYPES.items():
            sel = (layer.meta["dtype"] == code).nonzero().flatten()
            if len(sel) == 0:
                continue
            part = x[:, sel].transpose(0, 1).reshape(len(sel), -1)               # (m, H*Dh)
            if bits == 32:
                bufs.append(part.contiguous())
            elif bits == 16:
                bufs.append(part.bfloat16().contiguous())
            else:
                lo, hi = part.min(1, keepdim=True).values, part.max(1, keepdim=True).values
                scale = ((hi - lo) / (2 ** bits - 1)).clamp_min(1e-8)
                q = ((part - lo) / scale).round().clamp(0, 2 ** bits - 1).to(torch.uint8)
                per = 8 // bits
                pad = (-q.shape[1]) % per
                q = torch.nn.functional.pad(q, (0, pad)).reshape(len(sel), -1, per)
                packed = sum((q[..., i] << (bits * i)) for i in range(per)).to(torch.uint8)
                bufs += [packed.contiguous(), torch.cat([lo, scale], 1).half().contiguous()]
    return bufs
