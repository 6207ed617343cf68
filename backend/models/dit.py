"""Chunk-causal video DiT (DESIGN §4): adaLN timestep modulation, prompt tokens as a self-attention
prefix, 3D RoPE applied at attention time, SDPA and an explicit statistics path.

One module, three ways to run it:
- ``forward_seq``: a whole token sequence with a boolean mask (bidirectional teacher, block-causal
  student training in the teacher-forcing layout, and the full-recompute reference of the exactness test);
- ``prefill`` + ``forward_chunk`` (the model protocol, `protocol.py`): autoregressive inference against a
  ``KVCache``; denoise steps read the cache, the clean commit pass (t = 0) appends the chunk's un-rotated K/V
  and reports the attention statistics its observer asks for (`observe.Observer.kind`, what the policy
  reads): "probs" takes the explicit path (column sums and maxima of the probabilities), "logits" keeps the
  fused kernel and adds raw q.k sums, "none" neither. Every attention call's wall time is added to the
  `Clock` passed (the stepper splits a commit's cost of materialising attention from the attention itself).
Flow matching: x_t = (1 - t) x0 + t eps, the network predicts v = eps - x0.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cache import KIND_FRAME, KIND_PROMPT, KVCache, LayerCache
from ..config import ModelConfig
from ..rope import apply_rope, rope_angles
from .attention import STATS, attend_cached, probe_queries
from .dit_teacher import teacher_attention, teacher_mask
from .protocol import Clock, Geometry


def modulate(x, shift, scale):
    return torch.addcmul(shift, x, 1 + scale)


def gated(h, y, gate):
    return torch.addcmul(h, gate, y)


def grouped(fn, xs, conds, n_prefix: int, tpf: int):
    """Apply fn(*xs, *conds) with per-group conditions broadcast over their tokens, without materialising
    per-token copies. xs: (B, N, D) tensors; conds: (B, G, D) tensors whose group 0 is the prefix of
    n_prefix tokens (if n_prefix > 0) and the other groups are frames of tpf tokens each."""
    out = []
    if n_prefix:
        out.append(fn(*[x[:, :n_prefix] for x in xs], *[c[:, :1] for c in conds]))
        conds = [c[:, 1:] for c in conds]
    if xs[0].shape[1] > n_prefix:
        parts = [x[:, n_prefix:].unflatten(1, (-1, tpf)) for x in xs]  # (B, G, tpf, D)
        out.append(fn(*parts, *[c[:, :, None] for c in conds]).flatten(1, 2))
    return out[0] if len(out) == 1 else torch.cat(out, 1)


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1]: (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    ang = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.q_norm = nn.RMSNorm(cfg.head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(cfg.head_dim, eps=1e-6)

    def split(self, x):
        """x (B, N, D) -> q, k, v (B, H, N, Dh), q and k RMS-normalised (k is what the cache stores)."""
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.cfg.n_head, self.cfg.head_dim).permute(2, 0, 3, 1, 4)
        return self.q_norm(q), self.k_norm(k), v

    def merge(self, out):
        B, H, N, Dh = out.shape
        return self.proj(out.transpose(1, 2).reshape(B, N, H * Dh))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, cfg.dim))
        self.ada = nn.Linear(cfg.dim, 6 * cfg.dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def modulation(self, c_groups):
        """c_groups (B, G, D) -> six (B, G, D) tensors: adaLN shift/scale/gate for attention and MLP."""
        return self.ada(F.silu(c_groups)).chunk(6, dim=-1)

    def forward(self, h, c, n_prefix: int, attend):
        """One block; `attend(q, k, v) -> (B, H, N, Dh)` is the attention (masked SDPA or cache)."""
        tpf = self.attn.cfg.tokens_per_frame
        s1, sc1, g1, s2, sc2, g2 = self.modulation(c)
        x = grouped(modulate, [self.norm1(h)], [s1, sc1], n_prefix, tpf)
        a = self.attn.merge(attend(*self.attn.split(x)))
        h = grouped(gated, [h, a], [g1], n_prefix, tpf)
        y = self.mlp(grouped(modulate, [self.norm2(h)], [s2, sc2], n_prefix, tpf))
        return grouped(gated, [h, y], [g2], n_prefix, tpf)


class VideoDiT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.patch_in = nn.Linear(cfg.latent_ch, D)
        self.prompt_emb = nn.Embedding(cfg.prompt_vocab, D)
        self.prompt_c = nn.Parameter(torch.zeros(D))  # adaLN condition of prompt tokens
        self.t_mlp = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, D))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(D, 2 * D)
        self.out = nn.Linear(D, cfg.latent_ch)
        for m in (self.ada_out, self.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        nn.init.normal_(self.prompt_emb.weight, std=0.02)
        if cfg.prompt_factors:
            from ..prompt import COLOURS, SHAPES, object_factors

            colour, shape = object_factors()
            self.register_buffer("factor_ids", torch.tensor([colour, shape]), persistent=False)  # (2, V)
            # zero-initialised, the last row (not an object) stays zero: a model continued from joint-only
            # weights starts exactly where they were
            self.colour_emb = nn.Embedding(len(COLOURS) + 2, D, padding_idx=len(COLOURS) + 1)
            self.shape_emb = nn.Embedding(len(SHAPES) + 2, D, padding_idx=len(SHAPES) + 1)
            nn.init.zeros_(self.colour_emb.weight)
            nn.init.zeros_(self.shape_emb.weight)

    # ---------------------------------------------------------------- embeddings and positions
    def embed_prompt(self, tokens: torch.Tensor) -> torch.Tensor:
        """prompt token ids (..., P) -> embeddings (..., P, D). One joint embedding per (slot, value); with
        `prompt_factors`, object tokens add a colour and a shape embedding shared by every slot and combination,
        so what "square" draws is learned from every square in the data (the structured-condition hypothesis
        of the binding diagnosis, docs/results/binding/)."""
        h = self.prompt_emb(tokens)
        if self.cfg.prompt_factors:
            ids = self.factor_ids[:, tokens]  # (2, ..., P)
            h = h + self.colour_emb(ids[0]) + self.shape_emb(ids[1])
        return h

    def embed_frames(self, x: torch.Tensor) -> torch.Tensor:
        """latents (B, F, C, g, g) -> tokens (B, F*g*g, D), row-major over (y, x) within a frame."""
        B, Fr, C, g, _ = x.shape
        return self.patch_in(x.permute(0, 1, 3, 4, 2).reshape(B, Fr * g * g, C))

    def unembed(self, h: torch.Tensor, c: torch.Tensor, n_frames: int) -> torch.Tensor:
        """frame tokens (B, F*g*g, D) + per-frame conditions (B, F, D) -> velocity (B, F, C, g, g)."""
        shift, scale = self.ada_out(F.silu(c)).chunk(2, dim=-1)
        y = self.out(grouped(modulate, [self.norm_out(h)], [shift, scale], 0, self.cfg.tokens_per_frame))
        g = self.cfg.grid
        return y.view(y.shape[0], n_frames, g, g, -1).permute(0, 1, 4, 2, 3)

    def t_cond(self, t: torch.Tensor) -> torch.Tensor:
        """t (B, F) in [0, 1] -> conditions (B, F, D)."""
        return self.t_mlp(timestep_features(t, self.cfg.dim))

    def frame_positions(self, frames: torch.Tensor, t_offset: int = 0) -> torch.Tensor:
        """frame indices (F,) -> RoPE positions (F*g*g, 3) = (frame + 1 + t_offset, y, x); prompt is t = 0."""
        g = self.cfg.grid
        yy, xx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
        t = (frames.long() + 1 + t_offset)[:, None].expand(-1, g * g)
        return torch.stack([t.reshape(-1), yy.reshape(-1).repeat(len(frames)), xx.reshape(-1).repeat(len(frames))], 1)

    def rotate(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        cos, sin = rope_angles(pos, self.cfg)
        return apply_rope(x, cos, sin)

    # ---------------------------------------------------------------- whole-sequence path
    def forward_seq(self, h, c, n_prefix: int, pos, mask=None):
        """h (B, N, D): n_prefix prompt tokens then frames; c (B, G, D) group conditions (prompt, frames);
        pos (N, 3); mask (N, N) bool (True = attend) -> hidden states (B, N, D). SDPA path, used for
        training and as the full-recompute reference."""
        cos, sin = (a.to(h.device) for a in rope_angles(pos, self.cfg))  # positions live on the CPU
        mask = None if mask is None else mask.to(h.device)

        def attend(q, k, v):
            return F.scaled_dot_product_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, attn_mask=mask)

        for blk in self.blocks:
            h = blk(h, c, n_prefix, attend)
        return h

    def _prefix(self, prompt_tokens):
        B, P = prompt_tokens.shape
        return self.embed_prompt(prompt_tokens), self.prompt_c.expand(B, 1, -1), torch.zeros(P, 3, dtype=torch.long)

    def bidirectional(self, prompt_tokens, x, t, t_offset: int = 0):
        """Teacher: prompt (B, P), latents x (B, T, C, g, g) at levels t (B, T) -> velocity like x."""
        B, T = t.shape
        hp, cp, pp = self._prefix(prompt_tokens)
        h = torch.cat([hp, self.embed_frames(x)], 1)
        c = torch.cat([cp, self.t_cond(t)], 1)  # (B, 1 + T, D)
        P = prompt_tokens.shape[1]
        pos = torch.cat([pp, self.frame_positions(torch.arange(T), t_offset)])
        h = self.forward_seq(h, c, P, pos, teacher_mask(T, self.cfg, x.device))
        return self.unembed(h[:, P:], c[:, 1:], T)

    def teacher_forcing(
        self, prompt_tokens, clean, t_clean, noisy, t_noisy, t_offset: int = 0, window: int = 0, sink: int = 0
    ):
        """Student training / full-recompute reference in the layout [prompt | clean | noisy]:
        clean (B, T, C, g, g) at context levels t_clean (B, T), noisy (B, T, ...) at t_noisy (B, T)
        -> velocity for the noisy frames (B, T, C, g, g). `window` > 0 limits the context to the newest
        `window` chunks plus `sink` leading ones, as a sink/window cache does (see teacher_forcing_mask)."""
        B, T = t_noisy.shape
        hp, cp, pp = self._prefix(prompt_tokens)
        h = torch.cat([hp, self.embed_frames(clean), self.embed_frames(noisy)], 1)
        c = torch.cat([cp, self.t_cond(t_clean), self.t_cond(t_noisy)], 1)  # (B, 1 + 2T, D)
        tpf, P = self.cfg.tokens_per_frame, prompt_tokens.shape[1]
        fpos = self.frame_positions(torch.arange(T), t_offset)
        pos = torch.cat([pp, fpos, fpos])
        h = self.forward_seq(h, c, P, pos, teacher_forcing_mask(T, self.cfg, noisy.device, window, sink))
        return self.unembed(h[:, P + T * tpf :], c[:, 1 + T :], T)

    # ---------------------------------------------------------------- cached inference path (batch 1)
    @property
    def geometry(self) -> Geometry:
        c = self.cfg
        return Geometry(c.n_layer, c.n_head, c.head_dim, c.n_prompt, (c.grid, c.grid), c.chunk_frames, c.latent_ch)

    def condition(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt's tokens in the procedural world's grammar (PromptError for unknown words), and those of
        the same prompt with its colours left open, the reference of colour guidance (None when it names no
        colour: nothing to guide)."""
        from ..prompt import parse

        spec = parse(prompt)
        tokens, open_tokens = spec.tokens(), spec.open_colours().tokens()
        return torch.tensor(tokens), None if open_tokens == tokens else torch.tensor(open_tokens)

    def binding_reference(self, prompt: str) -> torch.Tensor:
        """The tokens of the prompt with each object's shape moved to the next (`SceneSpec.shifted_shapes`): the
        negative reference of shape guidance (SamplerConfig.shape_guidance)."""
        from ..prompt import parse

        return torch.tensor(parse(prompt).shifted_shapes().tokens())

    def teacher_attention(self, condition: torch.Tensor, x: torch.Tensor, t: float, visit) -> None:
        """The bidirectional teacher's pass over a clip, for PaFu-KV's labels (`dit_teacher.teacher_attention`)."""
        teacher_attention(self, condition, x, t, visit)

    @torch.no_grad()
    def prefill(self, prompt_tokens: torch.Tensor, cache: KVCache, observe=None, clock: Clock | None = None) -> None:
        """Run the prompt prefix (P,) once and store its K/V in every layer (the condition anchors); its
        statistics, if observed, come from every prompt query (a few tokens, once)."""
        P = prompt_tokens.shape[0]
        pos = torch.zeros(P, 3, dtype=torch.long)
        meta = {
            "frame": torch.full((P,), -1),
            "y": torch.full((P,), -1),
            "x": torch.arange(P),
            "kind": torch.full((P,), KIND_PROMPT),
            "pos": pos,
            "birth": torch.full((P,), -1),
            "token_id": torch.arange(P),
        }
        h = self.embed_prompt(prompt_tokens)[None]  # (1, P, D)
        c = self.prompt_c[None, None]  # (1, 1, D)
        self._layers(h, c, P, pos, cache, meta, commit=True, observe=observe, clock=clock)

    @torch.no_grad()
    def forward_chunk(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        first_frame: int,
        cache: KVCache,
        commit: bool = False,
        observe=None,
        condition_kv: KVCache | None = None,
        clock: Clock | None = None,
    ) -> torch.Tensor:
        """One chunk x (F, C, g, g) at noise levels t (F,), starting at frame index `first_frame` (chunk
        `first_frame // chunk_frames`). Attends over the cache + itself; commit=True appends the chunk's K/V
        and reports the attention statistics `observe` asks for (`observe.kind`, STATS; `observe.probe` < 1
        with "probs" forms the probabilities of that share of the chunk's queries only, `probe_queries`,
        beside the fused kernel) -> velocity (F, C, g, g).
        `condition_kv` (a cache holding only another prompt's prefill) stands in for the cached prompt tokens,
        slot by slot, in a read-only pass: the reference branch of prompt guidance (see SamplerConfig)."""
        Fr, g = x.shape[0], self.cfg.grid
        chunk = first_frame // self.cfg.chunk_frames
        frames = torch.arange(first_frame, first_frame + Fr)
        pos = self.frame_positions(frames)
        n = Fr * g * g
        h = self.embed_frames(x[None])  # (1, n, D)
        c = self.t_cond(t[None])  # (1, F, D)
        meta = None
        if commit and condition_kv is not None:
            raise ValueError("a prompt substitute is for read-only denoise passes, not commits")
        if commit:
            yy = torch.arange(g).repeat_interleave(g).repeat(Fr)
            xx = torch.arange(g).repeat(g * Fr)
            fr = frames.repeat_interleave(g * g)
            meta = {
                "frame": fr,
                "y": yy,
                "x": xx,
                "kind": torch.full((n,), KIND_FRAME),
                "pos": pos,
                "birth": torch.full((n,), chunk),
                "token_id": self.cfg.n_prompt + fr * g * g + yy * g + xx,
            }
        h = self._layers(
            h,
            c,
            0,
            pos,
            cache,
            meta,
            commit=commit,
            observe=observe if commit else None,
            chunk=chunk,
            condition_kv=condition_kv,
            clock=clock,
        )
        return self.unembed(h, c, Fr)[0]

    def _layers(
        self,
        h,
        c,
        n_prefix: int,
        pos,
        cache: KVCache,
        meta,
        commit: bool,
        observe=None,
        chunk: int = -1,
        condition_kv: KVCache | None = None,
        clock: Clock | None = None,
    ):
        stats = "none" if observe is None else observe.kind
        if stats not in STATS:
            raise ValueError(f"observed statistics must be one of {', '.join(STATS)}, got {stats!r}")
        n_q = h.shape[1]
        probes = probe_queries(n_q, observe.probe, chunk) if stats == "probs" and n_prefix == 0 else None
        cos, sin = rope_angles(pos, self.cfg)
        subs = condition_kv.layers if condition_kv is not None else [None] * len(cache.layers)
        for i, (blk, layer, sub) in enumerate(zip(self.blocks, cache.layers, subs)):

            def attend(q, k, v, i=i, layer=layer, sub=sub):  # (1, H, n, Dh) each
                q, k, v = q[0], k[0], v[0]
                qr, kr = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
                a = attend_cached(
                    layer,
                    i,
                    qr,
                    k,
                    kr,
                    v,
                    _cached_kv(layer, sub, self.rotate),
                    stats=stats,
                    probes=probes,
                    block=self.cfg.attn_block,
                    meta=meta if commit else None,
                    observe=observe,
                    chunk=chunk,
                    clock=clock,
                )
                return a[None]

            h = blk(h, c, n_prefix, attend)
        return h


def _cached_kv(layer: LayerCache, sub: LayerCache | None, rotate) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The cached keys (rotated) and values of `layer` (H, n, Dh), as parts to concatenate, in cache order (a
    per-head mask of the layer lines up with them): with `sub`, the prompt tokens are replaced by sub's tokens of
    the same prompt slots (the pass is read-only)."""
    k, v = layer.rotated_keys(rotate), layer.v
    if sub is None:
        return [k], [v]
    is_p = layer.meta["kind"] == KIND_PROMPT
    n_p = int(is_p.sum())
    if not bool(is_p[:n_p].all()):  # a prompt slot was evicted and the keep filled it: its places take sub's
        at, slots = is_p.nonzero().flatten(), layer.meta["token_id"][is_p]
        k = k.index_copy(1, at, sub.rotated_keys(rotate).index_select(1, slots))
        return [k], [v.index_copy(1, at, sub.v.index_select(1, slots))]
    slots = layer.meta["token_id"][:n_p]  # prefilled first and never evicted: the front, as views
    return ([sub.rotated_keys(rotate).index_select(1, slots), k[:, n_p:]], [sub.v.index_select(1, slots), v[:, n_p:]])


# ---------------------------------------------------------------------- sequence layouts and masks
def block_ids(n_frames: int, cfg: ModelConfig) -> torch.Tensor:
    """Chunk index of every frame token: (n_frames * g * g,)."""
    return (torch.arange(n_frames) // cfg.chunk_frames).repeat_interleave(cfg.tokens_per_frame)


@functools.lru_cache(maxsize=128)
def teacher_forcing_mask(
    n_frames: int, cfg: ModelConfig, device: torch.device | str = "cpu", window: int = 0, sink: int = 0
) -> torch.Tensor:
    """[prompt | clean frames | noisy frames]: exactly what cached inference computes.
    Clean chunk i sees prompt + clean chunks <= i (the commit pass); noisy chunk i sees prompt +
    clean chunks < i + itself (a denoise step). With `window` W > 0 a clean chunk k is visible to chunk i
    only if k >= i - W or k < `sink`: what a sink + window cache of W chunks holds (the window policy
    keeps the newest W chunks after a commit, so the next chunk's denoise steps see chunks i-W .. i-1 and
    its commit pass also itself). Cached per (length, config, device, window, sink), since training builds
    the same (P + 2N)^2 mask every forward pass (17 M entries at 32 frames): read-only."""
    P, N = cfg.n_prompt, n_frames * cfg.tokens_per_frame
    b = block_ids(n_frames, cfg).to(device)
    q, k = b[:, None], b[None, :]
    near = (k >= q - window) | (k < sink) if window > 0 else torch.ones_like(q >= k)
    m = torch.zeros(P + 2 * N, P + 2 * N, dtype=torch.bool, device=device)
    m[:, :P] = True
    m[P : P + N, P : P + N] = (q >= k) & near
    m[P + N :, P : P + N] = (q > k) & near
    m[P + N :, P + N :] = b[:, None] == b[None, :]
    return m
