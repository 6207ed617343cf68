"""Wan2.1-based chunk-causal generator (Self-Forcing, CausVid, LongLive) behind the model protocol.

Confirmed from Self-Forcing (arXiv 2506.08009; guandeh17/Self-Forcing `CausalWanModel`) and CausVid: the
generator is Wan2.1-T2V-1.3B's transformer run chunk-causally, 3 latent frames per chunk, each chunk denoised in
4 steps at t = 1000/750/500/250 (timestep shift 5) with the x0 estimate re-noised between steps, then re-run
clean at t = 0 to write its keys and values into the cache; text enters by cross-attention; RoPE is 3D (t, h,
w) with the absolute latent frame index as t.

This module: the released diffusers `WanTransformer3DModel` holds the weights; its blocks run here with the
project's attention over the project's `KVCache` (`models.attention.attend_cached`): keys cached before RoPE and
rotated at read time at their stored, possibly re-aligned, 3D positions; every frame modulated by its own
timestep (a chunk's frames share one level in Self-Forcing's inference, where this equals diffusers' per-sample
modulation); the observer hooks of the protocol. Cross-attention to the text and the feed-forward are the
diffusers modules, unchanged. The text's projection is computed once at `prefill` and held by the cache
(`KVCache.condition`); no condition token sits in the self-attention cache (`n_prompt` = 0).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..cache import KIND_FRAME, KVCache
from .attention import STATS, attend_cached, probe_queries
from .protocol import Clock, Geometry

ATTN_BLOCK = 1024  # query block of the explicit statistics path


class WanCausal(nn.Module):
    """A `WanTransformer3DModel` as a chunk-causal generator of the model protocol.

    text: the prompt's encoder (`wan_parts.WanText`); chunk_frames: latent frames per chunk (3 in Self-Forcing);
    frame_size: decoded pixels (height, width); vae_scale: the VAE's spatial compression (8); pixel_frames:
    video frames per latent frame (4, the VAE's temporal compression; the first latent frame decodes to one)."""

    def __init__(
        self,
        transformer,
        text=None,
        chunk_frames: int = 3,
        frame_size: tuple[int, int] = (480, 832),
        vae_scale: int = 8,
        pixel_frames: int = 4,
    ):
        super().__init__()
        self.tr = transformer
        self.text = text  # prompt -> embeddings (`wan_parts.WanText`)
        c = transformer.config
        pt, ph, pw = c.patch_size
        if pt != 1:
            raise ValueError(f"a temporal patch of {pt} frames is not supported (Wan2.1 uses 1)")
        lat = (frame_size[0] // vae_scale, frame_size[1] // vae_scale)
        if lat[0] % ph or lat[1] % pw:
            raise ValueError(f"frame size {frame_size} does not split into {ph}x{pw} patches of the latent")
        self.patch = (ph, pw)
        self._geometry = Geometry(
            n_layer=len(transformer.blocks),
            n_head=c.num_attention_heads,
            head_dim=c.attention_head_dim,
            n_prompt=0,
            grid=(lat[0] // ph, lat[1] // pw),
            chunk_frames=chunk_frames,
            latent_ch=c.in_channels,
            pixel_frames=pixel_frames,
            frame_size=tuple(frame_size),
            patch=(ph, pw),
            max_frames=transformer.rope.max_seq_len,
        )
        rope = transformer.rope
        self._rope_split = (rope.t_dim, rope.h_dim, rope.w_dim)

    @property
    def geometry(self) -> Geometry:
        return self._geometry

    # ---------------------------------------------------------------- positions
    def positions(self, first_frame: int, n_frames: int) -> torch.Tensor:
        """RoPE positions (n_frames * rows * cols, 3) = (latent frame, row, col), raster order per frame."""
        rows, cols = self._geometry.grid
        f = torch.arange(first_frame, first_frame + n_frames).repeat_interleave(rows * cols)
        y = torch.arange(rows).repeat_interleave(cols).repeat(n_frames)
        x = torch.arange(cols).repeat(rows * n_frames)
        return torch.stack([f, y, x], 1)

    def _angles(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (n, Dh) of positions pos (n, 3): diffusers' `WanRotaryPosEmbed` tables, looked up per axis."""
        rope = self.tr.rope
        if len(pos) and int(pos[:, 0].max()) >= rope.max_seq_len:
            raise ValueError(f"latent frame {int(pos[:, 0].max())} is beyond the RoPE table ({rope.max_seq_len})")
        cos = torch.cat([t[p] for t, p in zip(rope.freqs_cos.split(self._rope_split, 1), pos.T)], 1)
        sin = torch.cat([t[p] for t, p in zip(rope.freqs_sin.split(self._rope_split, 1), pos.T)], 1)
        return cos, sin

    def rotate(self, k: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Keys k (H, n, Dh) rotated to positions pos (n, 3), as diffusers' Wan attention rotates them
        (interleaved pairs)."""
        return _apply(k, *self._angles(pos))

    # ---------------------------------------------------------------- the protocol
    def condition(self, prompt: str) -> tuple[torch.Tensor, None]:
        """The prompt's UMT5 embeddings (max_length, text_dim); distilled generators need no guidance."""
        if self.text is None:
            raise ValueError("this Wan generator was built without a text encoder: load it from a model folder")
        return self.text(prompt), None

    def binding_reference(self, prompt: str) -> None:
        """No shape guidance: free text names no object slots to re-bind."""
        return None

    @torch.no_grad()
    def prefill(self, condition: torch.Tensor, cache: KVCache, observe=None, clock: Clock | None = None) -> None:
        """Project the text embeddings `condition` (L, text_dim) (the UMT5 encoder's output) once; the cache
        holds them for every pass's cross-attention. The self-attention cache gets no condition token."""
        emb = self.tr.condition_embedder.text_embedder(condition[None].to(self._dtype()))
        cache.condition = emb  # (1, L, D)
        if observe is not None:
            for i in range(len(cache.layers)):
                observe.grow(i, len(cache.layers[i]))

    def _dtype(self) -> torch.dtype:
        return self.tr.proj_out.weight.dtype

    def _time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise levels t (F,) in [0, 1] -> temb (F, D), timestep projection (F, 6, D) (Wan's timestep = 1000 t)."""
        ce = self.tr.condition_embedder
        f = ce.timesteps_proj(t.float() * 1000.0)
        dt = next(ce.time_embedder.parameters()).dtype
        temb = ce.time_embedder(f.to(dt)).to(self._dtype())
        return temb, ce.time_proj(ce.act_fn(temb)).unflatten(1, (6, -1))

    @torch.no_grad()
    def forward_chunk(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        first_frame: int,
        cache: KVCache,
        commit: bool = False,
        observe=None,
        condition_kv=None,
        clock: Clock | None = None,
    ) -> torch.Tensor:
        """Velocity (eps - x0) for the chunk x (F, C, h, w) at levels t (F,), its first latent frame at
        `first_frame`: attends over the cache and itself; commit=True appends its un-rotated K/V and reports
        the statistics `observe` asks for (see `dit.VideoDiT.forward_chunk`)."""
        if condition_kv is not None:
            raise ValueError("the Wan generator has no condition-substitute guidance (distilled: guidance 1)")
        context = getattr(cache, "condition", None)
        if context is None:
            raise ValueError("prefill the cache with the text condition first")
        geo = self._geometry
        Fr = x.shape[0]
        rows, cols = geo.grid
        tpf = rows * cols
        chunk = first_frame // geo.chunk_frames
        pos = self.positions(first_frame, Fr)
        cos, sin = self._angles(pos)
        h = self.tr.patch_embedding(x.permute(1, 0, 2, 3)[None].to(self._dtype()))  # (1, D, F, rows, cols)
        h = h.flatten(2).transpose(1, 2).contiguous()  # (1, F*T, D), raster per frame
        temb, tproj = self._time(t)
        meta = self._meta(first_frame, Fr, pos, chunk) if commit else None
        stats = "none" if observe is None or not commit else observe.kind
        if stats not in STATS:
            raise ValueError(f"observed statistics must be one of {', '.join(STATS)}, got {stats!r}")
        probes = probe_queries(Fr * tpf, observe.probe, chunk) if stats == "probs" else None
        for i, (blk, layer) in enumerate(zip(self.tr.blocks, cache.layers)):

            def attend(q, k, v, i=i, layer=layer):  # (H, n, Dh) each
                return attend_cached(
                    layer,
                    i,
                    _apply(q, cos, sin),
                    k,
                    _apply(k, cos, sin),
                    v,
                    ([layer.rotated_keys(self.rotate)], [layer.v]),
                    stats=stats,
                    probes=probes,
                    block=ATTN_BLOCK,
                    meta=meta,
                    observe=observe if commit else None,
                    chunk=chunk,
                    clock=clock,
                )

            h = self._block(blk, h, context, tproj, Fr, attend)
        return self._unembed(h, temb, Fr)

    def _unembed(self, h: torch.Tensor, temb: torch.Tensor, Fr: int) -> torch.Tensor:
        """Tokens h (1, F*T, D), temb (F, D) -> velocity (F, C, h, w): the output norm modulated per frame, the
        projection, and the 2D patches put back."""
        rows, cols = self._geometry.grid
        shift, scale = (self.tr.scale_shift_table + temb[:, None]).chunk(2, dim=1)  # (F, 1, D) each
        hs = h.view(Fr, rows * cols, -1)
        hs = (self.tr.norm_out(hs.float()) * (1 + scale) + shift).type_as(hs)
        out = self.tr.proj_out(hs)  # (F, T, ph * pw * C), C fastest
        ph, pw = self.patch
        out = out.view(Fr, rows, cols, ph, pw, -1).permute(0, 5, 1, 3, 2, 4)  # (F, C, rows, ph, cols, pw)
        return out.reshape(Fr, -1, rows * ph, cols * pw).float()

    def _meta(self, first_frame: int, Fr: int, pos: torch.Tensor, chunk: int) -> dict:
        rows, cols = self._geometry.grid
        n = Fr * rows * cols
        fr, yy, xx = pos.T
        return {
            "frame": fr.clone(),
            "y": yy.clone(),
            "x": xx.clone(),
            "kind": torch.full((n,), KIND_FRAME),
            "pos": pos,
            "birth": torch.full((n,), chunk),
            "token_id": fr * rows * cols + yy * cols + xx,
        }

    def _block(self, blk, h: torch.Tensor, context: torch.Tensor, tproj: torch.Tensor, Fr: int, attend):
        """One `WanTransformerBlock`, every frame modulated by its own timestep: h (1, F*T, D)."""
        D = h.shape[-1]
        mod = (blk.scale_shift_table + tproj.float()).chunk(6, dim=1)  # six (F, 1, D)
        shift_msa, scale_msa, gate_msa, c_shift, c_scale, c_gate = mod
        hs = h.view(Fr, -1, D)
        norm = (blk.norm1(hs.float()) * (1 + scale_msa) + shift_msa).type_as(hs)
        a = self._self_attention(blk.attn1, norm.reshape(1, -1, D), attend)
        hs = (hs.float() + a.view(Fr, -1, D) * gate_msa).type_as(hs)
        norm = blk.norm2(hs.float()).type_as(hs)
        hs = hs + blk.attn2(norm.reshape(1, -1, D), context, None, None).view(Fr, -1, D)
        norm = (blk.norm3(hs.float()) * (1 + c_scale) + c_shift).type_as(hs)
        ff = blk.ffn(norm)
        hs = (hs.float() + ff.float() * c_gate).type_as(hs)
        return hs.reshape(1, -1, D)

    @staticmethod
    def _self_attention(attn, x: torch.Tensor, attend) -> torch.Tensor:
        """diffusers `WanAttention` self-attention with `attend` (over the cache) in place of its kernel."""
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        q, k = attn.norm_q(q), attn.norm_k(k)
        heads = attn.heads
        q, k, v = (z[0].unflatten(1, (heads, -1)).transpose(0, 1) for z in (q, k, v))  # (H, n, Dh)
        out = attend(q, k, v).transpose(0, 1).flatten(1)[None]  # (1, n, H * Dh)
        return attn.to_out[1](attn.to_out[0](out.type_as(x)))

    # ---------------------------------------------------------------- whole-sequence reference
    @torch.no_grad()
    def teacher_attention(self, condition: torch.Tensor, x: torch.Tensor, t: float, visit) -> None:
        """PaFu-KV's teacher pass: the clip x (F, C, h, w) at noise level t with every token attending to every
        other (Wan2.1 itself is bidirectional; this model is the teacher when it holds the folder's own Wan2.1
        weights, `wan_loading.load_wan_teacher`); `condition`: the UMT5 embeddings (L, text_dim).
        visit(q, k, 0) gets every layer's rotated queries and keys (H, F * T, Dh); no condition token."""
        context = self.tr.condition_embedder.text_embedder(condition[None].to(self._dtype()))
        self.forward_seq(x, torch.full((x.shape[0],), float(t)), context, None, visit)

    @torch.no_grad()
    def forward_seq(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None, visit=None
    ):
        """Every frame at once: latents x (F, C, h, w) at levels t (F,), text projection `context` (1, L, D),
        mask (N, N) bool over the F * T tokens (True = attend; None: all) -> velocity (F, C, h, w). The
        full-recompute reference of the exactness test, with the same blocks; visit(q, k, 0), if given, sees
        every layer's rotated queries and keys (H, N, Dh)."""
        import torch.nn.functional as F

        Fr = x.shape[0]
        rows, cols = self._geometry.grid
        cos, sin = self._angles(self.positions(0, Fr))
        h = self.tr.patch_embedding(x.permute(1, 0, 2, 3)[None].to(self._dtype())).flatten(2).transpose(1, 2)
        temb, tproj = self._time(t)

        def attend(q, k, v):
            qr, kr = _apply(q, cos, sin), _apply(k, cos, sin)
            if visit is not None:
                visit(qr, kr, 0)
            return F.scaled_dot_product_attention(qr[None], kr[None], v[None], attn_mask=mask)[0]

        for blk in self.tr.blocks:
            h = self._block(blk, h.contiguous(), context, tproj, Fr, attend)
        return self._unembed(h, temb, Fr)


def _apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved-pair rotation of x (H, n, Dh) by cos / sin (n, Dh) (diffusers' Wan `apply_rotary_emb`)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out.type_as(x)


def block_causal_mask(n_frames: int, chunk_frames: int, tokens_per_frame: int) -> torch.Tensor:
    """(N, N) bool over n_frames * tokens_per_frame tokens: a token attends to every token of its own chunk and
    of earlier chunks (the chunk-causal generator's attention)."""
    chunk = (torch.arange(n_frames) // chunk_frames).repeat_interleave(tokens_per_frame)
    return chunk[:, None] >= chunk[None, :]
