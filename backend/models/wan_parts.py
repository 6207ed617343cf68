"""The Wan generator's other parts: the UMT5 text condition and the VAE decoding chunk by chunk.

- `WanText`: the prompt through `transformers`' UMT5 encoder, padded to `max_length` (512) with zeros past the
  prompt's tokens, as diffusers' `WanPipeline` conditions the transformer.
- `WanStreamDecoder`: `AutoencoderKLWan` decoding one latent frame at a time with its causal feature cache kept
  between chunks, so a video streams as it is generated (the first latent frame decodes to 1 pixel frame, every
  later one to 4). Previews of a chunk's x0 estimates decode on a copy of that state and leave it untouched.
  The per-frame loop and the cache are diffusers' own (`AutoencoderKLWan._decode`, 0.42.x): this class only
  keeps the cache alive across calls.
"""

from __future__ import annotations

import numpy as np
import torch

# Self-Forcing / CausVid sampling (confirmed: guandeh17/Self-Forcing configs, `denoising_step_list: [1000, 750,
# 500, 250]`, `warp_denoising_step`, timestep shift 5; the chunk re-run clean at t = 0 writes the cache). As a
# SamplerConfig: 4 re-noising steps at the shifted levels of 1, 0.75, 0.5, 0.25, every chunk, no guidance.
WAN_SAMPLER = dict(
    steps=4,
    shift=5.0,
    renoise=True,
    context_noise=0.0,
    first_steps=None,
    first_renoise=None,
    guidance=1.0,
    first_guidance=1.0,
)


class WanText:
    """prompt -> UMT5 embeddings (max_length, d_model), zero past the prompt's tokens."""

    def __init__(self, tokenizer, encoder, max_length: int = 512):
        self.tokenizer, self.encoder, self.max_length = tokenizer, encoder, max_length

    @torch.no_grad()
    def __call__(self, prompt: str) -> torch.Tensor:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty: describe the video to generate")
        n_tokens = len(self.tokenizer(prompt, add_special_tokens=True).input_ids)
        if n_tokens > self.max_length:
            raise ValueError(
                f"the prompt is {n_tokens} tokens; the text encoder takes at most {self.max_length}: shorten it"
            )
        ids = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        device = next(self.encoder.parameters()).device
        mask = ids.attention_mask.to(device)
        emb = self.encoder(ids.input_ids.to(device), mask).last_hidden_state[0]  # (max_length, d)
        n = int(mask.sum())
        emb[n:] = 0
        return emb.float().cpu()


class WanStreamDecoder:
    """Decodes a Wan latent video chunk by chunk (see the module docstring)."""

    def __init__(self, vae):
        if vae.config.patch_size is not None:
            raise ValueError("a patchified Wan VAE (Wan2.2) is not supported; use the Wan2.1 VAE")
        self.vae = vae
        z = vae.config.z_dim
        self.mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1)

    def initial_state(self) -> list:
        """The causal feature cache of a video not decoded yet (one per run: runs may interleave)."""
        self.vae.clear_cache()
        return list(self.vae._feat_map)

    @torch.no_grad()
    def decode_frames(self, z: torch.Tensor, first_frame: int, state: list) -> tuple[np.ndarray, list]:
        """Latents z (nf, C, h, w) of latent frames first_frame.. after `state` -> (uint8 (n_pixel, H, W, 3),
        the state after them). `state` itself is left as it was (a preview decodes and drops the new state)."""
        p = next(self.vae.parameters())
        x = z.permute(1, 0, 2, 3)[None].to(p.device, p.dtype)  # (1, C, nf, h, w)
        x = x * self.std.to(x) + self.mean.to(x)  # the transformer's normalised latents -> the VAE's
        x = self.vae.post_quant_conv(x)
        state = list(state)  # the decoder replaces entries, never changes a cached tensor
        out = []
        for i in range(x.shape[2]):
            idx = [0]
            out.append(
                self.vae.decoder(x[:, :, i : i + 1], feat_cache=state, feat_idx=idx, first_chunk=first_frame + i == 0)
            )
        video = torch.cat(out, 2).clamp(-1, 1)[0]  # (3, n_pixel, H, W)
        frames = ((video.permute(1, 2, 3, 0).float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return frames.cpu().numpy(), state


class NullDecoder:
    """The decoder protocol drawing nothing (blank frames of the right count and size): for runs that need
    latents or timings only (the speed benchmark, the salience head's training clips)."""

    def __init__(self, size: tuple[int, int], pixel_frames: int = 4):
        self.size, self.pixel_frames = tuple(size), pixel_frames

    def initial_state(self):
        return None

    def decode_frames(self, z, first_frame, state):
        n = 1 + self.pixel_frames * (len(z) - 1) if first_frame == 0 else self.pixel_frames * len(z)
        return np.zeros((n, *self.size, 3), np.uint8), state
