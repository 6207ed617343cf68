"""Per-token metadata of the KV cache: the fields, their packed layout and `Meta`, the dict of column views
`cache.LayerCache` keeps aligned with its keys and values."""

from __future__ import annotations

import torch

META_FIELDS = {  # name -> (dtype, trailing shape)
    "frame": (torch.int64, ()),
    "y": (torch.int64, ()),
    "x": (torch.int64, ()),
    "kind": (torch.int8, ()),  # 0 prompt, 1 frame
    "pos": (torch.int64, (3,)),  # RoPE position (t, y, x) used at attention time
    "birth": (torch.int64, ()),  # chunk index at which the token was committed
    "token_id": (torch.int64, ()),  # stable id: prompt slot, or n_prompt + frame * T + y * g + x
    "count": (torch.float32, ()),  # merge count (TempCache); 1 for plain tokens
    "dtype": (torch.int8, ()),  # storage dtype code (DTYPES)
    "qgroup": (torch.int64, ()),  # key-scale group of a `channel`-quantised token, -1 for none
    "gone": (torch.int64, ()),  # heads that no longer hold the token: bit h set = head h dropped it (per-head
    # policies: Dummy Forcing, Forcing-KV); 0 = every head holds it
}
KIND_PROMPT, KIND_FRAME = 0, 1


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
    (n, width) tensor per dtype, so keep / append / clone move three tensors instead of one per field (the
    eviction step is mostly this bookkeeping on a small model). Reading, in-place updates and item
    assignment work as on a dict of tensors; assigning a field writes its columns (cast to its dtype)."""

    def __init__(self, packs: dict[torch.dtype, torch.Tensor]):
        super().__init__()
        self.packs = packs
        for dt, cols in LAYOUT.items():
            p = packs[dt]
            col = p.unbind(1)  # every column view in one call
            for name, start, shape in cols:
                dict.__setitem__(self, name, col[start] if not shape else p[:, start : start + shape[0]])

    @classmethod
    def zeros(cls, n: int = 0) -> Meta:
        out = cls({dt: torch.zeros(n, w, dtype=dt) for dt, w in WIDTH.items()})
        out["qgroup"].fill_(-1)
        return out

    def __setitem__(self, key: str, val) -> None:
        if key not in META_FIELDS:
            raise KeyError(f"unknown metadata field {key!r}")
        col = dict.__getitem__(self, key)
        if val is not col:  # `m[k] += x` already wrote in place
            val = torch.as_tensor(val)
            col.copy_(val.reshape(col.shape) if val.numel() == col.numel() else val)

    def __reduce__(self):
        return Meta, (self.packs,)

    def index_select(self, idx: torch.Tensor) -> Meta:
        return Meta({dt: p.index_select(0, idx) for dt, p in self.packs.items()})

    def cat(self, other: Meta) -> Meta:
        return Meta({dt: torch.cat([p, other.packs[dt]]) for dt, p in self.packs.items()})

    def clone(self) -> Meta:
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
