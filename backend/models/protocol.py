"""The model protocol: what the stepper, the policies, the explorer, the CLI and the benchmarks may ask of a
chunk-causal video generator. The project's DiT (`dit.VideoDiT`) is one implementation; a real generator
(Wan2.1-based Self-Forcing / CausVid) is another, and nothing else needs to know which it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Geometry:
    """The shapes everything outside the model reads."""

    n_layer: int  # transformer blocks, each with its own KV cache layer
    n_head: int
    head_dim: int
    n_prompt: int  # condition tokens held in the self-attention cache (0: cross-attention)
    grid: tuple[int, int]  # latent tokens per frame as (rows, cols)
    chunk_frames: int  # latent frames generated per autoregressive chunk
    latent_ch: int  # channels of one latent token
    pixel_frames: int = 1  # video frames decoded from one latent frame
    frame_size: tuple[int, int] = (64, 64)  # pixels (height, width) of a decoded frame
    patch: tuple[int, int] = (1, 1)  # latent cells per token (rows, cols): Wan patchifies 2x2
    max_frames: int | None = None  # latent frames the model's positions cover (None: no limit)

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """One latent frame: (C, height, width) = (C, rows * patch rows, cols * patch cols)."""
        return (self.latent_ch, self.grid[0] * self.patch[0], self.grid[1] * self.patch[1])


class Clock:
    """Wall time the model spends in attention (`attn_ms`), summed over the calls it is passed to; the
    stepper splits a commit's cost of forming attention statistics from the attention itself with it."""

    def __init__(self):
        self.attn_ms = 0.0


@runtime_checkable
class CausalVideoModel(Protocol):
    """A generator that denoises one chunk at a time against a KV cache."""

    @property
    def geometry(self) -> Geometry: ...

    def condition(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt as this model is conditioned on it (what `prefill` takes), and the condition of its
        guidance reference (None: no guidance). Raises ValueError (a `prompt.PromptError`) for a prompt the
        model cannot take."""

    def binding_reference(self, prompt: str) -> torch.Tensor | None:
        """The condition of the prompt with its objects bound to wrong shapes, the negative reference of shape
        guidance (SamplerConfig.shape_guidance); None where prompts name no objects to re-bind."""

    def prefill(self, condition: torch.Tensor, cache, observe=None, clock: Clock | None = None) -> None:
        """Store the condition's (prompt's) keys and values in every cache layer: the anchors."""

    def forward_chunk(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        first_frame: int,
        cache,
        commit: bool = False,
        observe=None,
        condition_kv=None,
        clock: Clock | None = None,
    ) -> torch.Tensor:
        """Velocity for the chunk x (F, C, rows, cols) at noise levels t (F,), its first frame at index
        `first_frame`, attending over the cache and itself. commit=True appends the chunk's un-rotated keys
        and values and reports the attention statistics `observe` (an `observe.Observer`) asks for, layer by
        layer; `condition_kv` (a cache holding another condition's prefill) stands in for the cached
        condition tokens in a read-only pass (guidance)."""

    def rotate(self, k: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Keys k (H, n, Dh) rotated to positions pos (n, 3) (RoPE re-alignment of cached keys)."""


@runtime_checkable
class FrameDecoder(Protocol):
    """Latents to pixels, chunk by chunk: the project's autoencoder (one pixel frame per latent frame, no
    state) or a streaming video VAE (Wan: a causal feature cache carried from chunk to chunk)."""

    def initial_state(self): ...

    def decode_frames(self, z: torch.Tensor, first_frame: int, state):
        """Latents z (nf, C, h, w) of latent frames first_frame.. after `state` -> (uint8 (n_pixel, H, W, 3),
        the state after them); `state` itself is left unchanged."""
