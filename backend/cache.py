"""KV cache with per-token metadata, per-token storage dtype and exact byte accounting.

Per layer: K and V ``[H, n, Dh]`` (keys *un-rotated*), plus aligned per-token metadata (frame, y, x,
kind, RoPE position, birth chunk, token id, attention statistics, predicted salience, merge count,
storage dtype). Every mutation (append / keep / set_positions / quantize) keeps all of them aligned.

Quantised tokens (int8 / int4 / int2, asymmetric min-max with fp16 scales and zero points) are held
dequantised in fp32 for compute, as most KV-quantisation studies simulate them; ``nbytes`` reports the
packed size, and ``pack_layer`` builds the packed buffers to prove it. Three schemes (``QUANT_SCHEMES``):

- ``channel`` (default): keys per channel over the group of tokens stored together (one commit's older
  tokens), values per token and head. KIVI (arXiv 2402.02750) found key outliers along channels and
  quantises keys per channel, values per token; KVQuant (arXiv 2401.18079) quantises keys before RoPE,
  which is what this cache stores. Our reconstruction: a group is the tokens of one ``set_dtype`` call
  (a frame at chunk size 1) instead of KIVI's fixed 32-128 tokens; its per-channel scales live as long as
  any of its tokens does and are counted once.
- ``token``: one scale and zero point per token over all heads and dims, for K and for V alike.
- ``hadamard``: ``channel`` after an orthonormal Walsh-Hadamard rotation of each head's dims, undone on
  dequantisation (QuaRot, arXiv 2404.00456, rotates activations and KV so that outliers spread over all
  dims before low-bit rounding). The rotation is a fixed matrix, so the bytes are those of ``channel``.
  Our use: the rotation is per head over the head dim (a power of two), applied to the un-rotated keys
  (before RoPE) and to the values. Measured (H2O, int4, 256 frames): a 20% smaller attention-output
  error, but no reliable PSNR gain (better on validation prompts, worse on held-out ones), so ``channel``
  stays the default (docs/benchmarks/int4_hadamard/).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

# storage dtype codes: name -> (code, bits); int formats carry an fp16 scale + zero per token per tensor
DTYPES = {"fp32": (0, 32), "bf16": (1, 16), "int8": (2, 8), "int4": (3, 4), "int2": (4, 2)}
SCALE_BYTES = 4  # fp16 scale + fp16 zero point, per quantisation group
QUANT_SCHEMES = ("channel", "token", "hadamard")

META_FIELDS = {  # name -> (dtype, trailing shape)
    "frame": (torch.int64, ()), "y": (torch.int64, ()), "x": (torch.int64, ()),
    "kind": (torch.int8, ()),             # 0 prompt, 1 frame
    "pos": (torch.int64, (3,)),           # RoPE position (t, y, x) used at attention time
    "birth": (torch.int64, ()),           # chunk index at which the token was committed
    "token_id": (torch.int64, ()),        # stable id: prompt slot, or n_prompt + frame * T + y * g + x
    "attn_sum": (torch.float32, ()),      # accumulated attention (head mean, sum over recorded queries)
    "attn_max": (torch.float32, ()),      # max attention received from any recorded query (head mean)
    "attn_count": (torch.float32, ()),    # number of recorded queries that could attend to the token (all of
                                          # a commit's, or its probes: Policy.probe)
    "recent": (torch.float32, ()),        # mean attention from the newest committed chunk's recorded queries
    "pred": (torch.float32, ()),          # predicted salience (PaFu-KV head), if any
    "count": (torch.float32, ()),         # merge count (TempCache); 1 for plain tokens
    "qk_hist": (torch.float32, (4,)),     # mean raw logit q.k/sqrt(d) from each of the last 4 commits (ring)
    "dtype": (torch.int8, ()),            # storage dtype code (DTYPES)
    "qgroup": (torch.int64, ()),          # key-scale group of a `channel`-quantised token, -1 for none
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
            col = p.unbind(1)                                # every column view in one call
            for name, start, shape in cols:
                dict.__setitem__(self, name, col[start] if not shape else p[:, start:start + shape[0]])

    @classmethod
    def zeros(cls, n: int = 0) -> "Meta":
        out = cls({dt: torch.zeros(n, w, dtype=dt) for dt, w in WIDTH.items()})
        out["qgroup"].fill_(-1)
        return out

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


def _minmax(x: torch.Tensor, bits: int, dim) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric min-max quantisation of x at `bits` reduced over `dim`: integer codes (float, x's shape),
    and the fp16-representable zero point `lo` and `scale` of each slice."""
    lo, hi = x.amin(dim, keepdim=True).half().float(), x.amax(dim, keepdim=True).half().float()
    scale = ((hi - lo) / (2 ** bits - 1)).clamp_min(1e-8)
    return ((x - lo) / scale).round().clamp(0, 2 ** bits - 1), lo, scale


def _minmax_roundtrip(x: torch.Tensor, bits: int, dim) -> torch.Tensor:
    """Round trip of x through `_minmax` (one fp16 scale and zero point per slice reduced over `dim`)."""
    q, lo, scale = _minmax(x, bits, dim)
    return q * scale + lo


def quantize(x: torch.Tensor, bits: int, per_head: bool = False) -> torch.Tensor:
    """Per-token round trip of x [H, n, Dh]: one range per token over all heads and dims, or per token and
    head (`per_head`)."""
    dim = 2 if per_head else (0, 2)
    return _minmax_roundtrip(x, bits, dim).contiguous()


def quantize_channels(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-channel round trip of x [H, n, Dh]: one range per (head, dim) channel over the n tokens (KIVI keys)."""
    return _minmax_roundtrip(x, bits, 1).contiguous()


@functools.lru_cache(maxsize=None)
def hadamard(n: int) -> torch.Tensor:
    """Orthonormal Walsh-Hadamard matrix (n, n) by Sylvester's construction; n a power of two."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"the hadamard quantisation scheme needs a power-of-two head dim, got {n}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h / h.shape[0] ** 0.5


def quant_error_bound(x: torch.Tensor, bits: int, dim=(0, 2)) -> torch.Tensor:
    """Worst-case abs error of a min-max round trip reduced over `dim` (broadcast to x): half a step plus
    the fp16 rounding of the range ends."""
    rng = x.amax(dim, keepdim=True) - x.amin(dim, keepdim=True)
    return (rng / (2 ** bits - 1) / 2 + 2e-3 * x.abs().amax(dim, keepdim=True) + 1e-6).expand_as(x)


def bytes_per_token(n_head: int, head_dim: int, name: str, scheme: str = "channel", group: int | None = None) -> float:
    """Bytes one token takes at dtype `name`, K and V together: codes and its own scales, plus (with `group`)
    its share of a `channel` group's per-channel key scales when `group` tokens share them."""
    bits = DTYPES[name][1]
    codes = 2 * ((n_head * head_dim * bits + 7) // 8)
    if bits >= 16:
        return float(codes)
    if scheme == "token":
        return float(codes + 2 * SCALE_BYTES)                  # K and V: one scale + zero each
    shared = n_head * head_dim * SCALE_BYTES / group if group else 0.0
    return codes + n_head * SCALE_BYTES + shared               # V per head; K per channel, shared


@functools.lru_cache(maxsize=None)
def _own_bytes_table(n_head: int, head_dim: int) -> torch.Tensor:
    """(dtype code, 0 token scheme / 1 channel or hadamard scheme) -> a token's own bytes (`bytes_per_token`, no group share)."""
    return torch.tensor([[int(bytes_per_token(n_head, head_dim, name, scheme)) for scheme in ("token", "channel")]
                         for name in DTYPES])


def inverse_norms(k: torch.Tensor) -> torch.Tensor:
    """1 / |k_i| over the concatenated heads: k (H, n, Dh) -> (n,) float32 (numpy's einsum on a view: no
    squared copy of the keys)."""
    kn = k.detach().float().numpy()
    return torch.from_numpy(1.0 / np.maximum(np.sqrt(np.einsum("hnd,hnd->n", kn, kn)), 1e-12))


@dataclass
class LayerCache:
    k: torch.Tensor                     # (H, n, Dh), un-rotated keys
    v: torch.Tensor                     # (H, n, Dh)
    meta: Meta                          # each field (n, ...); a plain dict of every field is packed
    _krot: torch.Tensor | None = None   # memo of rotated keys (H, n, Dh): kept through append / keep,
                                        # dropped when keys or positions change
    _rotate: object = None              # the rotation the memo was made with ((k, pos) -> rotated k)
    _inv: torch.Tensor | None = None    # memo of 1 / |k_i| over the concatenated heads (n,): kept through
                                        # append / keep, dropped when keys change (RoPE leaves norms alone)
    next_group: int = 0                 # id of the next `channel` quantisation group

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
        idx = torch.as_tensor(idx, dtype=torch.long).numpy()          # index bookkeeping in numpy: a few
        n = len(self)                                                 # microseconds less per op, ~20 ops
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f"keep index out of range 0..{n - 1}")
        gone = np.ones(n, dtype=bool)
        gone[idx] = False
        m = n - int(gone.sum())
        evicted = torch.from_numpy(self.meta["token_id"].numpy()[gone])
        holes = np.flatnonzero(gone[:m])                              # evicted slots below the new length
        movers = np.flatnonzero(~gone[m:]) + m                        # kept tokens above it (as many)
        src = np.arange(m)
        if len(holes):
            src[holes] = movers
            holes_t, movers_t = torch.from_numpy(holes), torch.from_numpy(movers)
            tensors = [self.k, self.v] + ([self._krot] if self._krot is not None else [])
            for x in tensors:                                         # (H, n, Dh): in place, |holes| tokens
                x.index_copy_(1, holes_t, x.index_select(1, movers_t))
            if self._inv is not None:
                self._inv.index_copy_(0, holes_t, self._inv.index_select(0, movers_t))
            for p in self.meta.packs.values():
                p.index_copy_(0, holes_t, p.index_select(0, movers_t))
        source = torch.from_numpy(src)
        self.k, self.v = self.k[:, :m], self.v[:, :m]
        self.meta = Meta({dt: p[:m] for dt, p in self.meta.packs.items()})
        if self._krot is not None:                                    # positions unchanged: the memo stays valid
            self._krot = self._krot[:, :m]
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
        src = torch.as_tensor(src, dtype=torch.long).numpy()                  # index bookkeeping in numpy
        dst = torch.as_tensor(dst, dtype=torch.long).numpy()
        gone = np.zeros(len(self), dtype=bool)
        if len(src) == 0:
            return torch.from_numpy(gone)
        gone[src] = True
        if gone[dst].any() or int(gone.sum()) != len(src):
            raise ValueError("merge: a token cannot be both merged away and a target, or merged twice")
        cnt = self.meta["count"]
        is_tgt = np.zeros(len(self), dtype=bool)                              # only the targets change
        is_tgt[dst] = True
        tgt = torch.from_numpy(np.flatnonzero(is_tgt))                        # (m,) ascending
        slot = torch.from_numpy((np.cumsum(is_tgt) - 1)[dst])                 # each src's target slot
        src = torch.from_numpy(src)
        vsum = self.v.index_select(1, tgt) * cnt[tgt][None, :, None]          # (H, m, Dh) count-weighted
        vsum.index_add_(1, slot, self.v.index_select(1, src) * cnt[src][None, :, None])
        tgt_cnt = cnt[tgt].index_add(0, slot, cnt[src])
        self.v.index_copy_(1, tgt, vsum / tgt_cnt[None, :, None])
        cnt.index_copy_(0, tgt, tgt_cnt)                                      # the packed column, in place
        cnt.index_fill_(0, src, 0.0)                                          # merged away: nothing left to count
        return torch.from_numpy(gone)

    def set_positions(self, pos: torch.Tensor) -> None:
        """Replace the RoPE positions (n, 3) the keys are rotated with (shift / re-index modes). The
        rotated-key memo is updated for the tokens whose position changed (rotation is per token, so this
        equals re-rotating every key), at once: the policy that moved them pays for it in its eviction step."""
        new = pos.to(torch.int64).reshape(len(self), 3)
        if self._krot is not None and self._rotate is not None:
            changed = np.flatnonzero((new.numpy() != self.meta["pos"].numpy()).any(1))
            if len(changed):
                ch = torch.from_numpy(changed)
                self._krot.index_copy_(1, ch, self._rotate(self.k.index_select(1, ch), new.index_select(0, ch)))
        else:
            self._krot = None
        self.meta["pos"] = new

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
                k, v = self.k.index_select(1, idx), self.v.index_select(1, idx)      # (H, m, Dh)
                rot = hadamard(k.shape[2]) if scheme == "hadamard" else None
                if rot is not None:
                    k, v = k @ rot, v @ rot
                k, v = quantize_channels(k, bits), quantize(v, bits, per_head=True)
                if rot is not None:                                                # H orthonormal: H^-1 = H^T
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
        self._krot = self._inv = None

    # --- reads ---
    def view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(K un-rotated (H, n, Dh), V (H, n, Dh), RoPE positions (n, 3)) of the tokens held."""
        return self.k, self.v, self.meta["pos"]

    def rotated_keys(self, rotate) -> torch.Tensor:
        """Keys rotated by their stored positions (memoised until the next change)."""
        if self._krot is None:
            self._krot, self._rotate = rotate(self.k, self.meta["pos"]), rotate
        return self._krot

    def inverse_key_norms(self) -> torch.Tensor:
        """1 / |k_i| of each token's key over the concatenated heads (n,) float32 (memoised until the keys
        change; rotated keys have the same norms up to float rounding). FlowCache's redundancy and
        TempCache's cosine search read it after every commit."""
        if self._inv is None:
            self._inv = inverse_norms(self.k)
        return self._inv

    def nbytes(self) -> int:
        """Exact bytes of the layer: each token's own bytes, K and V together (codes and per-token scales;
        counted per (dtype, grouped) class), plus the fp16 per-channel key scales of every `channel` group
        that still has a quantised token (shared by the group, counted once). In numpy: every StepRecord
        reads it."""
        H, _, Dh = self.k.shape
        dt, qg = self.meta["dtype"].numpy().astype(np.int64), self.meta["qgroup"].numpy()
        classes = np.bincount(dt * 2 + (qg >= 0), minlength=2 * len(DTYPES))     # (dtype, grouped) counts
        own = int(classes @ _own_bytes_table(H, Dh).numpy().reshape(-1))
        groups = np.unique(qg[(dt >= DTYPES["int8"][0]) & (qg >= 0)])
        return own + len(groups) * H * Dh * SCALE_BYTES

    def clone(self) -> "LayerCache":
        return LayerCache(self.k.clone(), self.v.clone(), self.meta.clone(), next_group=self.next_group)


class KVCache:
    """One LayerCache per transformer layer; `clone()` branches a run (compare from the same prefix)."""

    def __init__(self, n_layer: int, n_head: int, head_dim: int):
        self.layers = [LayerCache.empty(n_head, head_dim) for _ in range(n_layer)]
        self.attn_ms = 0.0       # wall time of the model's attention calls on this cache (the stepper resets it)

    def occupancy(self) -> list[int]:
        return [len(layer) for layer in self.layers]

    def nbytes(self) -> list[int]:
        return [layer.nbytes() for layer in self.layers]

    def clone(self) -> "KVCache":
        new = KVCache.__new__(KVCache)
        new.layers = [layer.clone() for layer in self.layers]
        new.attn_ms = 0.0
        return new


def _codes(x: torch.Tensor, bits: int, dim) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (uint8, same shape as x) and fp16 (lo, scale) of `_minmax` reduced over `dim`."""
    q, lo, scale = _minmax(x, bits, dim)
    return q.to(torch.uint8), torch.stack([lo, scale]).half()


def _pack_rows(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes (m, w) packed 8 / bits per byte along each row: (m, ceil(w * bits / 8)) uint8."""
    per = 8 // bits
    q = torch.nn.functional.pad(q, (0, (-q.shape[1]) % per)).reshape(len(q), -1, per)
    return sum((q[..., i] << (bits * i)) for i in range(per)).to(torch.uint8)


def pack_layer(layer: LayerCache) -> list[torch.Tensor]:
    """Packed storage of a layer as real byte buffers (for verifying `nbytes`): fp32 / bf16 values, int codes
    packed 8 / 2 / 4 per byte, and fp16 scale + zero point per token (`token` scheme), per token and head
    (`channel` values) or per channel and group (`channel` keys). `hadamard` groups pack like `channel` ones:
    the same codes and scales, taken in the rotated basis, which a fixed matrix maps back."""
    bufs = []
    H, _, Dh = layer.k.shape
    group = layer.meta["qgroup"]
    for name, (code, bits) in DTYPES.items():
        sel = (layer.meta["dtype"] == code).nonzero().flatten()
        if len(sel) == 0:
            continue
        for x, is_key in ((layer.k, True), (layer.v, False)):
            part = x[:, sel].transpose(0, 1).reshape(len(sel), -1)               # (m, H*Dh)
            if bits >= 16:
                bufs.append((part if bits == 32 else part.bfloat16()).contiguous())
                continue
            g = group[sel]
            if bool((g < 0).any()):                                               # token scheme
                q, lo_scale = _codes(part[g < 0], bits, 1)
                bufs += [_pack_rows(q, bits), lo_scale]
            rows = part[g >= 0]
            if len(rows) and is_key:                                              # per channel, per group
                for gid in g[g >= 0].unique():
                    q, lo_scale = _codes(part[g == gid], bits, 0)
                    bufs += [_pack_rows(q, bits), lo_scale]
            elif len(rows):                                                       # per token and head
                q, lo_scale = _codes(rows.reshape(len(rows), H, Dh), bits, 2)
                bufs += [_pack_rows(q.reshape(len(rows), -1), bits), lo_scale]
    return bufs
