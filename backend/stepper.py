"""Stepper: drives generation one observable step at a time and emits immutable StepRecords.

Per chunk: ``steps`` denoise steps (read the cache, write nothing), one clean commit pass at t = 0 (writes
the chunk's K/V; materialises attention for its statistics only when the policy reads them, or when asked
with ``attention=True``, as the explorer does for its heatmaps), then the policy evicts. Before the first
chunk a prefill step stores the prompt anchors.
Noise is derived from (seed, chunk, step) only, so runs with different policies share it and differ only
by what their caches kept.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from .autoencoder import AutoEncoder, tensor_to_frames
from .cache import KVCache
from .config import SamplerConfig
from .flow import step as flow_step
from .flow import timesteps
from .model import STATS, VideoDiT
from .policies import EvictContext, Full, Policy
from .prompt import parse
from .records import StepRecord

MAX_FRAMES = 100_000


class GenerationError(ValueError):
    """Invalid generation request (frames, memory, prompt): raised before any work is done."""


def noise_seed(seed: int, chunk: int, step: int = -1) -> int:
    """A 63-bit seed for (seed, chunk, step), independent of everything else in the run."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, chunk + 1, step + 2]).generate_state(2, np.uint64)[0] >> 1)


def validate_frames(n) -> None:
    """Reject frame counts that are not positive integers or are above MAX_FRAMES."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise GenerationError(f"frames must be an integer, got {n!r}")
    if n <= 0:
        raise GenerationError(f"frames must be positive, got {n}")
    if n > MAX_FRAMES:
        raise GenerationError(f"{n} frames is above the limit of {MAX_FRAMES}")


def available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


@dataclass
class Stepper:
    model: VideoDiT
    ae: AutoEncoder
    prompt: str
    n_frames: int
    seed: int = 0
    policy: Policy = field(default_factory=Full)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    preview: bool = True            # decode the x0 estimate at every denoise step
    trace_inputs: bool = False      # keep (chunk, step, t, x_in, v) of every denoise step (exactness test)
    attention: bool | str | None = None   # commit statistics (model.STATS): None = what the policy reads,
                                          # True = all ("probs", the explorer's heatmaps), False = "none"

    def __post_init__(self):
        self.spec = parse(self.prompt)                                     # raises PromptError
        validate_frames(self.n_frames)
        cfg = self.model.cfg
        try:
            self.policy.check(cfg.n_prompt, cfg.tokens_per_frame, cfg.chunk_frames)
        except ValueError as e:
            raise GenerationError(str(e)) from e
        need = self.policy.attention_stats
        own = self.attention is None                                       # recording only what the policy reads
        level = {None: need, True: "probs", False: "none"}.get(self.attention, self.attention)
        if level not in STATS:
            raise GenerationError(f"attention must be None, True, False or one of {', '.join(STATS)}, got "
                                  f"{self.attention!r}")
        if STATS.index(level) < STATS.index(need):
            raise GenerationError(f"policy {self.policy.name!r} reads the {need!r} attention statistics; "
                                  f"attention={self.attention!r} does not record them")
        self.attention = level
        # probe queries stand in for every query only where the policy itself reads probabilities, so
        # recording more for a policy that reads less (the explorer's heatmaps) changes none of its inputs
        self._probe = self.policy.probe if need == "probs" else 1.0
        # a policy that reads only the newest commit's statistics needs none from a commit after which it keeps
        # everything (the cache filling, or between the evictions of period > 1); recording asked for beyond
        # the policy's needs (the explorer's heatmaps) is recorded at every commit
        self._lazy = self.policy.lazy_stats and own
        self._check_memory()
        self.cache = KVCache(cfg.n_layer, cfg.n_head, cfg.head_dim)
        self.tokens = torch.tensor(self.spec.tokens())
        self.n_chunks = -(-self.n_frames // cfg.chunk_frames)
        self.ts_first = timesteps(self.sampler, first_chunk=True).tolist()
        self.ts_rest = timesteps(self.sampler).tolist()
        S = self.ae.cfg.size
        self.frames = np.zeros((self.n_frames, S, S, 3), np.uint8)
        self.latents = torch.zeros(self.n_frames, cfg.latent_ch, cfg.grid, cfg.grid)
        self.chunk, self.k, self.counter = 0, -1, 0                        # k = -1: prefill pending
        self.x: torch.Tensor | None = None
        self._guide: KVCache | None = None                                 # open-colour prompt prefill
        self.x0: torch.Tensor | None = None
        self.done = self.cancelled = False
        self.frame_ms = np.zeros(self.n_frames)                            # all steps of a frame's chunk
        self.inputs: list[tuple[int, int, float, torch.Tensor, torch.Tensor]] = []
        self._pass_attn_ms: list[float] = []

    def _check_memory(self) -> None:
        cfg = self.model.cfg
        per_token = cfg.n_layer * 2 * cfg.dim * 4 + 200                    # K + V fp32 + metadata
        tokens = cfg.n_prompt + self.n_frames * cfg.tokens_per_frame
        bound = self.policy.max_tokens(cfg.n_prompt, cfg.tokens_per_frame, cfg.chunk_frames)
        if bound is not None:
            tokens = min(tokens, bound)
        need = tokens * per_token + self.n_frames * (self.ae.cfg.size ** 2 * 3 + cfg.tokens_per_frame * cfg.latent_ch * 4)
        have = available_memory()
        if need > 0.8 * have:
            raise GenerationError(f"{self.n_frames} frames would need about {need / 2**30:.1f} GiB (KV cache "
                                  f"and frames), more than the {0.8 * have / 2**30:.1f} GiB available; use "
                                  "fewer frames or a bounded cache policy")

    # ------------------------------------------------------------------ driving
    def cancel(self) -> None:
        """Stop between steps; the cache holds only committed chunks, so it stays consistent."""
        self.cancelled = True

    def run(self) -> Iterator[StepRecord]:
        while not self.done and not self.cancelled:
            yield self.step()

    @property
    def ts(self) -> list[float]:
        """Noise levels of the current chunk's denoise steps."""
        return self.ts_first if self.chunk == 0 else self.ts_rest

    def step(self) -> StepRecord:
        if self.done:
            raise StopIteration("generation is finished")
        t0 = time.perf_counter()
        cfg = self.model.cfg
        self.cache.attn_ms = 0.0
        if self.k == -1:
            self.model.prefill(self.tokens, self.cache, stats=self.attention)
            open_tokens = self.spec.open_colours().tokens()
            if (self.sampler.first_guidance, self.sampler.guidance) != (1.0, 1.0) and open_tokens != self.tokens.tolist():
                self._guide = KVCache(cfg.n_layer, cfg.n_head, cfg.head_dim)
                self.model.prefill(torch.tensor(open_tokens), self._guide, stats="none")
            self.k = 0
            return self._record("prefill", -1, None, None, t0, chunk=-1)
        f0 = self.chunk * cfg.chunk_frames
        nf = min(cfg.chunk_frames, self.n_frames - f0)
        if self.k < len(self.ts):                                          # a denoise step
            if self.k == 0:
                g = torch.Generator().manual_seed(noise_seed(self.seed, self.chunk))
                self.x = torch.randn(nf, cfg.latent_ch, cfg.grid, cfg.grid, generator=g)
            t = self.ts[self.k]
            t_next = self.ts[self.k + 1] if self.k + 1 < len(self.ts) else 0.0
            tt = torch.full((nf,), t)
            if self.k == 0:
                self._pass_attn_ms = []                                    # fused attention per pass, this chunk
            v = self.model.forward_chunk(self.x, tt, f0, self.cache, chunk=self.chunk)
            passes = 1
            if self.trace_inputs:                                          # the model's own (unguided) output
                self.inputs.append((self.chunk, self.k, t, self.x.clone(), v.clone()))
            scale = self.sampler.first_guidance if self.chunk == 0 else self.sampler.guidance
            if self._guide is not None and scale != 1.0:
                v_open = self.model.forward_chunk(self.x, tt, f0, self.cache, chunk=self.chunk, prompt_kv=self._guide)
                passes = 2
                v = v_open + scale * (v - v_open)
            renoise = self.sampler.renoise
            if self.chunk == 0 and self.sampler.first_renoise is not None:
                renoise = self.sampler.first_renoise
            noise = None
            if t_next > 0 and renoise:
                g = torch.Generator().manual_seed(noise_seed(self.seed, self.chunk, self.k))
                noise = torch.randn(self.x.shape, generator=g)
            self._pass_attn_ms.append(self.cache.attn_ms / passes)
            self.x, self.x0 = flow_step(self.x, v, t, t_next, noise, renoise)
            step_k = self.k
            self.k += 1
            preview = self._decode(self.x0) if self.preview else None
            return self._record("denoise", step_k, t, preview, t0)
        if self.k == len(self.ts):                                         # commit the clean chunk
            s = self.sampler.context_noise
            x_ctx = self.x0
            if s > 0:          # the context the student was trained with: (1 - s) x0 + s eps (CausVid)
                g = torch.Generator().manual_seed(noise_seed(self.seed, self.chunk, -2))
                x_ctx = (1 - s) * self.x0 + s * torch.randn(self.x0.shape, generator=g)
            stats = self.attention
            if self._lazy and not self.policy.evicts_after(self.cache, nf * cfg.tokens_per_frame):
                stats = "none"                 # no layer evicts after this commit: nothing reads its statistics
            self.model.forward_chunk(x_ctx, torch.full((nf,), s), f0, self.cache, commit=True, chunk=self.chunk,
                                     stats=stats, probe=self._probe)
            self.latents[f0:f0 + nf] = self.x0
            if self.sampler.guidance == 1.0:
                self._guide = None                                         # only the first chunk was guided
            frames = self._decode(self.x0)
            self.frames[f0:f0 + nf] = frames
            self.k += 1
            # the commit's attention has the denoise passes' shapes (same cache, same chunk): what it took
            # beyond their fused attention is the cost of materialising it for the policy's statistics
            stats_ms = self.cache.attn_ms - float(np.mean(self._pass_attn_ms)) if stats != "none" else 0.0
            return self._record("commit", -1, s, frames, t0, stats_ms=stats_ms)
        ctx = EvictContext(self.chunk, (f0, f0 + nf - 1), cfg.tokens_per_frame, cfg.grid, self.model.rotate)
        ev = self.policy.evict(self.cache, ctx)
        rec = self._record("evict", -1, None, None, t0, ev)
        self.chunk, self.k = self.chunk + 1, 0
        self.done = self.chunk >= self.n_chunks
        return rec

    # ------------------------------------------------------------------ helpers
    @torch.no_grad()
    def _decode(self, z: torch.Tensor) -> np.ndarray:
        return tensor_to_frames(self.ae.decode(z))

    def _record(self, phase, step, t, preview, t0, ev=None, chunk=None, stats_ms=0.0) -> StepRecord:
        ms = (time.perf_counter() - t0) * 1e3
        cf = self.model.cfg.chunk_frames
        chunk = self.chunk if chunk is None else chunk
        frames = (0, 0) if chunk < 0 else (chunk * cf, min((chunk + 1) * cf, self.n_frames))
        if chunk >= 0:                                   # every step of a chunk counts towards its frames
            self.frame_ms[frames[0]:frames[1]] += ms / (frames[1] - frames[0])
        rec = StepRecord.make(
            index=self.counter, phase=phase, chunk=chunk, step=step, t=t, frames=frames,
            preview=preview, occupancy=self.cache.occupancy(), nbytes=self.cache.nbytes(),
            eviction=ev, ms=ms, stats_ms=stats_ms)
        self.counter += 1
        return rec
