"""Pixel fidelity metrics: PSNR and SSIM between two videos (the literature's convention)."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def psnr(a, b, data_range: float = 255.0) -> float:
    """PSNR in dB between two arrays/tensors of equal shape (mean over everything)."""
    if torch.is_tensor(a):
        mse = torch.mean((a.float() - b.float()) ** 2).item()
    else:
        mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def psnr_per_frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint8 videos [T, H, W, 3] -> PSNR per frame [T] (inf where identical, capped at 100 dB)."""
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = d.reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return np.minimum(10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)), 100.0)


def ssim_frame(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004, Gaussian window 11, sigma 1.5) of two uint8 RGB frames, mean over channels."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)  # noqa: E731
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        out.append(s.mean())
    return float(np.mean(out))


def ssim_per_frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([ssim_frame(x, y) for x, y in zip(a, b)])
