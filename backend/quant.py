"""KV storage formats: dtypes, quantisation round trips, exact byte counts and packed buffers.

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
  stays the default (docs/decisions/int4_hadamard/).
"""

from __future__ import annotations

import functools

import torch

# storage dtype codes: name -> (code, bits); int formats carry an fp16 scale + zero per token per tensor
DTYPES = {"fp32": (0, 32), "bf16": (1, 16), "int8": (2, 8), "int4": (3, 4), "int2": (4, 2)}
SCALE_BYTES = 4  # fp16 scale + fp16 zero point, per quantisation group
QUANT_SCHEMES = ("channel", "token", "hadamard")


def _minmax(x: torch.Tensor, bits: int, dim) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric min-max quantisation of x at `bits` reduced over `dim`: integer codes (float, x's shape),
    and the fp16-representable zero point `lo` and `scale` of each slice."""
    lo, hi = x.amin(dim, keepdim=True).half().float(), x.amax(dim, keepdim=True).half().float()
    scale = ((hi - lo) / (2**bits - 1)).clamp_min(1e-8)
    return ((x - lo) / scale).round().clamp(0, 2**bits - 1), lo, scale


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


@functools.cache
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
    return (rng / (2**bits - 1) / 2 + 2e-3 * x.abs().amax(dim, keepdim=True) + 1e-6).expand_as(x)


def bytes_per_token(n_head: int, head_dim: int, name: str, scheme: str = "channel", group: int | None = None) -> float:
    """Bytes one token takes at dtype `name`, K and V together: codes and its own scales, plus (with `group`)
    its share of a `channel` group's per-channel key scales when `group` tokens share them."""
    bits = DTYPES[name][1]
    codes = 2 * ((n_head * head_dim * bits + 7) // 8)
    if bits >= 16:
        return float(codes)
    if scheme == "token":
        return float(codes + 2 * SCALE_BYTES)  # K and V: one scale + zero each
    shared = n_head * head_dim * SCALE_BYTES / group if group else 0.0
    return codes + n_head * SCALE_BYTES + shared  # V per head; K per channel, shared


@functools.cache
def _own_bytes_table(n_head: int, head_dim: int) -> torch.Tensor:
    """(dtype code, 0 token scheme / 1 channel or hadamard scheme) -> a token's own bytes (`bytes_per_token`, no "
    "group share)."""
    return torch.tensor(
        [[int(bytes_per_token(n_head, head_dim, name, scheme)) for scheme in ("token", "channel")] for name in DTYPES]
    )


def _codes(x: torch.Tensor, bits: int, dim) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (uint8, same shape as x) and fp16 (lo, scale) of `_minmax` reduced over `dim`."""
    q, lo, scale = _minmax(x, bits, dim)
    return q.to(torch.uint8), torch.stack([lo, scale]).half()


def _pack_rows(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes (m, w) packed 8 / bits per byte along each row: (m, ceil(w * bits / 8)) uint8."""
    per = 8 // bits
    q = torch.nn.functional.pad(q, (0, (-q.shape[1]) % per)).reshape(len(q), -1, per)
    return sum((q[..., i] << (bits * i)) for i in range(per)).to(torch.uint8)


def pack_layer(layer) -> list[torch.Tensor]:
    """Packed storage of a `cache.LayerCache` as real byte buffers (for verifying `nbytes`): fp32 / bf16 values,
    int codes
    packed 8 / 2 / 4 per byte, and fp16 scale + zero point per token (`token` scheme), per token and head
    (`channel` values) or per channel and group (`channel` keys). `hadamard` groups pack like `channel` ones:
    the same codes and scales, taken in the rotated basis, which a fixed matrix maps back. A token only some
    heads hold (per-head policies) is packed for those heads (a ragged store); a group's key scales cover every
    head."""
    bufs = []
    H, _, Dh = layer.k.shape
    group = layer.meta["qgroup"]
    for code, bits in DTYPES.values():
        sel = (layer.meta["dtype"] == code).nonzero().flatten()
        if len(sel) == 0:
            continue
        for x, is_key in ((layer.k, True), (layer.v, False)):
            g = group[sel]
            key_codes = {}  # group id -> (token position -> row, codes (m_g, H*Dh)): one scale set per group
            if bits < 16 and is_key:
                for gid in g[g >= 0].unique().tolist():
                    members = sel[g == gid]
                    q, lo_scale = _codes(x[:, members].transpose(0, 1).reshape(len(members), H * Dh), bits, 0)
                    key_codes[gid] = ({int(t): r for r, t in enumerate(members)}, q)
                    bufs.append(lo_scale)
            for heads, toks in _held_patterns(layer, sel):
                part = x[heads][:, toks].transpose(0, 1).reshape(len(toks), -1)  # (m, c*Dh)
                if bits >= 16:
                    bufs.append((part if bits == 32 else part.bfloat16()).contiguous())
                    continue
                gt = group[toks]
                if bool((gt < 0).any()):  # token scheme
                    q, lo_scale = _codes(part[gt < 0], bits, 1)
                    bufs += [_pack_rows(q, bits), lo_scale]
                rows = part[gt >= 0]
                if len(rows) and is_key:  # per channel, per group: the codes of the heads that hold them
                    cols = (heads[:, None] * Dh + torch.arange(Dh)).reshape(-1)
                    for t, gid in zip(toks[gt >= 0].tolist(), gt[gt >= 0].tolist()):
                        at, q = key_codes[gid]
                        bufs.append(_pack_rows(q[at[t] : at[t] + 1, cols], bits))
                elif len(rows):  # per token and head
                    q, lo_scale = _codes(rows.reshape(len(rows), len(heads), Dh), bits, 2)
                    bufs += [_pack_rows(q.reshape(len(rows), -1), bits), lo_scale]
    return bufs


def _held_patterns(layer, sel: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The tokens `sel` grouped by the heads that hold them: [(heads (c,), tokens (m,))]."""
    held = layer.head_mask()
    if held is None:
        return [(torch.arange(layer.k.shape[0]), sel)]
    cols = held[:, sel].T  # (m, H)
    rows, inverse = torch.unique(cols, dim=0, return_inverse=True)
    return [(row.nonzero().flatten(), sel[inverse == i]) for i, row in enumerate(rows)]
