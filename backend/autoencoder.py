"""Small convolutional autoencoder: 64x64 RGB frames <-> 8x8xC latents (64 tokens per frame).

Plays the role of the VAE in real AR video diffusion systems (Wan, CogVideoX): the transformer works on
its latents, which are normalised per channel to zero mean and unit variance with statistics measured on
world frames after training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class AEConfig:
    size: int = 64  # input frames are size x size RGB
    widths: tuple[int, ...] = (32, 64, 96)  # one stride-2 stage per width: 64 -> 8 with three
    latent_ch: int = 8

    @property
    def grid(self) -> int:
        return self.size // 2 ** len(self.widths)


AE_PRESETS: dict[str, AEConfig] = {
    "default": AEConfig(),  # 64 -> 8x8x8 latents: the shipped autoencoder
    # 64 -> 16x16x4 (twice the numbers, four times the tokens): a sprite of radius 5-6.5 px spans about 3x3
    # tokens instead of 1.5x1.5, so its shape is a pattern of tokens rather than a few channels of one
    "fine": AEConfig(widths=(32, 64), latent_ch=4),
}


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class AutoEncoder(nn.Module):
    def __init__(self, cfg: AEConfig = AEConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        enc = [nn.Conv2d(3, w[0], 3, padding=1)]
        for i, ch in enumerate(w):
            enc += [nn.Conv2d(w[max(i - 1, 0)] if i else w[0], ch, 4, stride=2, padding=1), ResBlock(ch)]
        enc += [nn.GELU(), nn.Conv2d(w[-1], cfg.latent_ch, 1)]
        self.encoder = nn.Sequential(*enc)
        dec = [nn.Conv2d(cfg.latent_ch, w[-1], 3, padding=1), ResBlock(w[-1])]
        for i in reversed(range(len(w))):
            out = w[i - 1] if i else w[0]
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w[i], out, 3, padding=1), ResBlock(out)]
        dec += [nn.GELU(), nn.Conv2d(w[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("lat_mean", torch.zeros(cfg.latent_ch))
        self.register_buffer("lat_std", torch.ones(cfg.latent_ch))

    # frames are float in [-1, 1], [N, 3, S, S]; latents are normalised, [N, C, g, g]
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)  # (N, C, g, g)
        return (z - self.lat_mean[:, None, None]) / self.lat_std[:, None, None]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = z * self.lat_std[:, None, None] + self.lat_mean[:, None, None]
        return self.decoder(z)  # (N, 3, S, S)

    def initial_state(self):
        """The decoder protocol (`models.protocol.FrameDecoder`): frames decode independently, no state."""
        return None

    @torch.no_grad()
    def decode_frames(self, z: torch.Tensor, first_frame: int, state=None):
        """Latents z (nf, C, g, g) -> (uint8 (nf, S, S, 3), state): one pixel frame per latent frame."""
        return tensor_to_frames(self.decode(z)), state

    def forward(self, x):
        return self.decode(self.encode(x))


def frames_to_tensor(frames) -> torch.Tensor:
    """uint8 [N, S, S, 3] (numpy or tensor, on any device) -> float [N, 3, S, S] in [-1, 1]."""
    x = torch.as_tensor(frames).float().permute(0, 3, 1, 2)
    return x / 127.5 - 1.0


def tensor_to_frames(x: torch.Tensor):
    """float [N, 3, S, S] in [-1, 1] -> uint8 [N, S, S, 3] numpy."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()
