"""Stepper: drives generation one observable step at a time and emits immutable StepRecords.

Per chunk: ``steps`` denoise steps (read the cache, write nothing), one clean commit pass at t = 0 (writes
the chunk's K/V; materialises attention for its statistics only when the policy reads them, or when asked
with ``attention=True``, as the explorer does for its heatmaps), then the policy evicts. Before the first
chunk a prefill step stores the prompt anchors.
Noise is derived from (seed, chunk, step) only, so runs with different policies share it and differ only
by what their caches kept.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .cache import KVCache
from .config import SamplerConfig
from .flow import step as flow_step
from .flow import timesteps
from .models.attention import STATS
from .models.protocol import CausalVideoModel, Clock, FrameDecoder
from .observe import observer_for
from .policies import EvictContext, Full, Policy
from .records import StepRecord

MAX_FRAMES = 100_000
# What commit records can carry per cached token (`Stepper.signals`): past attention (accumulated attention
# over the queries that could see the token, H2O / ZipCache; recorded for every policy, so the explorer can
# paint it for all) and the salience head's prediction (what PaFu-KV would keep).
RECORDED_SIGNALS = ("attention", "predicted")


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
    model: CausalVideoModel
    ae: FrameDecoder  # the project autoencoder, or a streaming video VAE
    prompt: str
    n_frames: int
    seed: int = 0
    policy: Policy = field(default_factory=lambda: Policy(Full()))  # the full cache
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    preview: bool = True  # decode the x0 estimate at every denoise step
    trace_inputs: bool = False  # keep (chunk, step, t, x_in, v) of every denoise step (exactness test)
    attention: bool | str | None = None  # commit statistics (STATS): None = what the policy reads,
    # True = all ("probs", the explorer's heatmaps), False = "none"
    signals: tuple[str, ...] = ()  # what commit records carry beside the cached token ids (RECORDED_SIGNALS)
    signal_head: object = None  # the SalienceHead whose predictions the "predicted" signal records

    def __post_init__(self):
        self.condition, self.open_condition = self.model.condition(self.prompt)  # raises PromptError
        self.binding_condition = self.model.binding_reference(self.prompt)
        validate_frames(self.n_frames)
        limit = self.model.geometry.max_frames
        if limit is not None and self.n_frames > limit:
            raise GenerationError(f"{self.n_frames} frames is beyond this model's positions ({limit} latent frames)")
        unknown = set(self.signals) - set(RECORDED_SIGNALS)
        if unknown:
            raise GenerationError(
                f"unknown recorded signal(s) {', '.join(sorted(unknown))}; known: {', '.join(RECORDED_SIGNALS)}"
            )
        if "predicted" in self.signals and self.signal_head is None:
            raise GenerationError("the 'predicted' signal needs a salience head (signal_head)")
        if "attention" in self.signals and self.attention is None:
            self.attention = True  # past attention of every query
        geo = self.geo = self.model.geometry
        try:
            self.policy.check(geo.n_prompt, geo.tokens_per_frame, geo.chunk_frames)
        except ValueError as e:
            raise GenerationError(str(e)) from e
        request = self.policy.request()
        need = request.kind
        own = self.attention is None  # recording only what the policy reads
        level = {None: need, True: "probs", False: "none"}.get(self.attention, self.attention)
        if level not in STATS:
            raise GenerationError(
                f"attention must be None, True, False or one of {', '.join(STATS)}, got {self.attention!r}"
            )
        if STATS.index(level) < STATS.index(need):
            raise GenerationError(
                f"policy {self.policy.name!r} reads the {need!r} attention statistics; "
                f"attention={self.attention!r} does not record them"
            )
        self.attention = level
        # the policy's observed attention (its own accumulators); probe queries stand in for every query only
        # where the policy itself reads probabilities, so recording more for a policy that reads less (the
        # explorer's heatmaps) changes none of its inputs
        self.observer = observer_for(request, geo.n_layer, record=level, owner=f"policy {self.policy.name!r}")
        self.policy.bind(self.observer)
        # a policy that reads only the newest commit's statistics needs none from a commit after which it keeps
        # everything (the cache filling, or between the evictions of period > 1); recording asked for beyond
        # the policy's needs (the explorer's heatmaps) is recorded at every commit
        self._lazy = request.newest_only and own
        self._own_stats = own
        self._check_memory()
        self.cache = KVCache(geo.n_layer, geo.n_head, geo.head_dim)
        self.n_chunks = -(-self.n_frames // geo.chunk_frames)
        self.ts_first = timesteps(self.sampler, first_chunk=True).tolist()
        self.ts_rest = timesteps(self.sampler).tolist()
        H, W = geo.frame_size
        self.frames = np.zeros((self.n_frames, H, W, 3), np.uint8)  # one per latent frame (its last pixel frame)
        self.video_chunks: list[np.ndarray] = []  # every decoded pixel frame, when a latent frame holds several
        self._vae_state = self.ae.initial_state()  # a streaming decoder's state after the committed chunks
        self.latents = torch.zeros(self.n_frames, *geo.latent_shape)
        self.chunk, self.k, self.counter = 0, -1, 0  # k = -1: prefill pending
        self._phases: Iterator[StepRecord] | None = None
        self.x: torch.Tensor | None = None
        self._guide: KVCache | None = None  # open-colour prompt prefill
        self._rebound: KVCache | None = None  # shifted-shape prompt prefill (shape guidance)
        self.x0: torch.Tensor | None = None
        self.done = self.cancelled = False
        self.frame_ms = np.zeros(self.n_frames)  # all steps of a frame's chunk
        self.inputs: list[tuple[int, int, float, torch.Tensor, torch.Tensor]] = []
        self._pass_attn_ms: list[float] = []

    def _head_occupancy(self) -> np.ndarray | None:
        """(L, H) tokens each head holds, when a per-head policy runs (None otherwise: every head holds the
        layer's tokens)."""
        if not self.policy.scorer.per_head:
            return None
        return self.cache.head_occupancy()

    def _check_memory(self) -> None:
        geo = self.geo
        per_token = geo.n_layer * (2 * geo.n_head * geo.head_dim * 4 + 200)  # K + V fp32 + metadata + observed
        tokens = geo.n_prompt + self.n_frames * geo.tokens_per_frame
        bound = self.policy.max_tokens(geo.n_prompt, geo.tokens_per_frame, geo.chunk_frames)
        if bound is not None:
            tokens = min(tokens, bound)
        H, W = geo.frame_size
        pixels = H * W * 3 * (1 + (geo.pixel_frames if geo.pixel_frames > 1 else 0))
        need = tokens * per_token + self.n_frames * (pixels + math.prod(geo.latent_shape) * 4)
        have = available_memory()
        if need > 0.8 * have:
            raise GenerationError(
                f"{self.n_frames} frames would need about {need / 2**30:.1f} GiB (KV cache "
                f"and frames), more than the {0.8 * have / 2**30:.1f} GiB available; use "
                "fewer frames or a bounded cache policy"
            )

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
        """The next observable step's record (prefill, a denoise step, a commit or an eviction)."""
        if self.done:
            raise StopIteration("generation is finished")
        if self._phases is None:
            self._phases = self._generate()
        return next(self._phases)

    def _generate(self) -> Iterator[StepRecord]:
        """The run's phases in order: the prefill, then per chunk its denoise steps, the clean commit and the
        policy's eviction. `chunk` and `k` say where the next step is (the explorer's status reads them)."""
        yield self._prefill()
        for chunk in range(self.n_chunks):
            self.chunk = chunk
            f0 = chunk * self.geo.chunk_frames
            nf = min(self.geo.chunk_frames, self.n_frames - f0)
            for k, t in enumerate(self.ts):
                self.k = k
                yield self._denoise(k, t, f0, nf)
            self.k = len(self.ts)
            yield self._commit(f0, nf)
            self.k += 1
            yield self._evict(f0, nf)

    def _prefill(self) -> StepRecord:
        t0, geo = time.perf_counter(), self.geo
        self.model.prefill(self.condition, self.cache, observe=self.observer, clock=Clock())
        guided = (self.sampler.first_guidance, self.sampler.guidance) != (1.0, 1.0)
        if guided and self.open_condition is not None:
            self._guide = KVCache(geo.n_layer, geo.n_head, geo.head_dim)
            self.model.prefill(self.open_condition, self._guide)
        if self.sampler.shape_guidance != 1.0 and self.binding_condition is not None:
            self._rebound = KVCache(geo.n_layer, geo.n_head, geo.head_dim)
            self.model.prefill(self.binding_condition, self._rebound)
        self.k = 0
        return self._record("prefill", -1, None, None, t0, chunk=-1)

    def _denoise(self, k: int, t: float, f0: int, nf: int) -> StepRecord:
        t0, clock = time.perf_counter(), Clock()
        if k == 0:  # the chunk's noise, from (seed, chunk) only
            g = torch.Generator().manual_seed(noise_seed(self.seed, self.chunk))
            self.x = torch.randn(nf, *self.geo.latent_shape, generator=g)
            self._pass_attn_ms = []  # fused attention per pass, this chunk
        t_next = self.ts[k + 1] if k + 1 < len(self.ts) else 0.0
        tt = torch.full((nf,), t)
        v = self.model.forward_chunk(self.x, tt, f0, self.cache, clock=clock)
        passes = 1
        if self.trace_inputs:  # the model's own (unguided) output
            self.inputs.append((self.chunk, k, t, self.x.clone(), v.clone()))
        scale = self.sampler.first_guidance if self.chunk == 0 else self.sampler.guidance
        rebind = None
        if self._rebound is not None:  # from the unguided v, composed with colour guidance below
            v_wrong = self.model.forward_chunk(self.x, tt, f0, self.cache, condition_kv=self._rebound, clock=clock)
            passes += 1
            rebind = (self.sampler.shape_guidance - 1.0) * (v - v_wrong)
        if self._guide is not None and scale != 1.0:
            v_open = self.model.forward_chunk(self.x, tt, f0, self.cache, condition_kv=self._guide, clock=clock)
            passes += 1
            v = v_open + scale * (v - v_open)
        if rebind is not None:
            v = v + rebind
        renoise = self.sampler.renoise
        if self.chunk == 0 and self.sampler.first_renoise is not None:
            renoise = self.sampler.first_renoise
        noise = None
        if t_next > 0 and renoise:
            g = torch.Generator().manual_seed(noise_seed(self.seed, self.chunk, k))
            noise = torch.randn(self.x.shape, generator=g)
        self._pass_attn_ms.append(clock.attn_ms / passes)
        self.x, self.x0 = flow_step(self.x, v, t, t_next, noise, renoise)
        preview = self._decode(self.x0, f0, commit=False) if self.preview else None
        return self._record("denoise", k, t, preview, t0)

    def _commit(self, f0: int, nf: int) -> StepRecord:
        t0, clock = time.perf_counter(), Clock()
        s = self.sampler.context_noise
        x_ctx = self.x0
        if s > 0:  # the context the student was trained with: (1 - s) x0 + s eps (CausVid)
            g = torch.Generator().manual_seed(noise_seed(self.seed, self.chunk, -2))
            x_ctx = (1 - s) * self.x0 + s * torch.randn(self.x0.shape, generator=g)
        observe = self.observer
        if self._lazy and not self.policy.evicts_after(self.cache, nf * self.geo.tokens_per_frame):
            observe = observe.quiet()  # no layer evicts after this commit: nothing reads its statistics
        elif self._own_stats and self.policy.scorer.done_reading(self.observer):
            observe = observe.quiet()  # the policy reads no more statistics this run (its heads are programmed)
        self.model.forward_chunk(x_ctx, torch.full((nf,), s), f0, self.cache, commit=True, observe=observe, clock=clock)
        self.latents[f0 : f0 + nf] = self.x0
        if self.sampler.guidance == 1.0:
            self._guide = None  # only the first chunk was guided
        frames = self._decode(self.x0, f0, commit=True)
        self.frames[f0 : f0 + nf] = frames
        t_rec = time.perf_counter()
        ids, signals = self._recorded()
        t0 += time.perf_counter() - t_rec  # recording is not the chunk's cost
        # the commit's attention has the denoise passes' shapes (same cache, same chunk): what it took
        # beyond their fused attention is the cost of materialising it for the policy's statistics
        stats_ms = clock.attn_ms - float(np.mean(self._pass_attn_ms)) if observe.kind != "none" else 0.0
        return self._record(
            "commit", -1, s, frames, t0, stats_ms=stats_ms, ids=ids, signals=signals, latents=self.x0.numpy()
        )

    def _evict(self, f0: int, nf: int) -> StepRecord:
        t0, geo = time.perf_counter(), self.geo
        ctx = EvictContext(self.chunk, (f0, f0 + nf - 1), geo.tokens_per_frame, geo.grid[1], self.model.rotate)
        ev = self.policy.evict(self.cache, ctx)
        last = self.chunk + 1 >= self.n_chunks
        rec = self._record("evict", -1, None, None, t0, ev, final=last)
        self.chunk, self.k = self.chunk + 1, 0
        self.done = last
        return rec

    # ------------------------------------------------------------------ helpers
    def _recorded(self) -> tuple[list | None, dict | None]:
        """The cached token ids per layer and the signals asked for, aligned with them (commit records)."""
        if not self.signals:
            return None, None
        ids = [layer.meta["token_id"].numpy().copy() for layer in self.cache.layers]
        out = {}
        if "attention" in self.signals:
            out["attention"] = [self.observer.past_attention(i, check=False).numpy().copy() for i in range(len(ids))]
        if "predicted" in self.signals:
            pred = self.observer.add_extra("signal_head", self.cache.occupancy())
            self.signal_head.predict_cache(self.cache, pred, only_new=True)
            out["predicted"] = [p.numpy().copy() for p in pred]
        return ids, out

    def _timings(self) -> dict[str, np.ndarray]:
        """The last record's timings: each frame's wall time, and the policy's own (its observer's "_ms" notes,
        e.g. PaFu-KV's salience head)."""
        notes = self.observer.notes
        return {"frame_ms": self.frame_ms, **{k: np.asarray(v) for k, v in notes.items() if k.endswith("_ms")}}

    @torch.no_grad()
    def _decode(self, z: torch.Tensor, first_frame: int, commit: bool) -> np.ndarray:
        """Frames of latents z (nf, ...): uint8 (nf, H, W, 3), each latent frame's last pixel frame. A committed
        chunk's pixel frames go to the video (a streaming decoder advances its state only on commits)."""
        pix, state = self.ae.decode_frames(z, first_frame, self._vae_state)  # (n_pixel, H, W, 3)
        if commit:
            self._vae_state = state
            if self.geo.pixel_frames > 1:
                self.video_chunks.append(pix)
        if self.geo.pixel_frames == 1:
            return pix
        counts = [1 if first_frame + j == 0 else self.geo.pixel_frames for j in range(len(z))]
        return pix[np.cumsum(counts) - 1]

    @property
    def video(self) -> np.ndarray:
        """Every decoded pixel frame so far: uint8 (n, H, W, 3) (the frames themselves at one per latent)."""
        if not self.video_chunks:
            return self.frames
        return np.concatenate(self.video_chunks)

    def _record(
        self,
        phase,
        step,
        t,
        preview,
        t0,
        ev=None,
        chunk=None,
        stats_ms=0.0,
        ids=None,
        signals=None,
        final=False,
        latents=None,
    ) -> StepRecord:
        ms = (time.perf_counter() - t0) * 1e3
        cf = self.geo.chunk_frames
        chunk = self.chunk if chunk is None else chunk
        frames = (0, 0) if chunk < 0 else (chunk * cf, min((chunk + 1) * cf, self.n_frames))
        if chunk >= 0:  # every step of a chunk counts towards its frames
            self.frame_ms[frames[0] : frames[1]] += ms / (frames[1] - frames[0])
        rec = StepRecord.make(
            index=self.counter,
            phase=phase,
            chunk=chunk,
            step=step,
            t=t,
            frames=frames,
            preview=preview,
            occupancy=self.cache.occupancy(),
            nbytes=self.cache.nbytes(),
            eviction=ev,
            ms=ms,
            stats_ms=stats_ms,
            ids=ids,
            signals=signals,
            timings=self._timings() if final else None,
            latents=latents,
            heads=self._head_occupancy(),
        )
        self.counter += 1
        return rec
