"""Build models from presets or shipped safetensors weights (never pickles)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch

from . import checkpoint
from .autoencoder import AEConfig, AutoEncoder
from .config import MODEL_PRESETS, ModelConfig, SamplerConfig
from .models.dit import VideoDiT
from .salience import SalienceHead, SEHConfig, head_file

MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
DEFAULT_MODEL = MODELS_DIR / "student.safetensors"
DEFAULT_AE = MODELS_DIR / "autoencoder.safetensors"


def load_autoencoder(path: str | Path = DEFAULT_AE) -> AutoEncoder:
    tensors, cfg, _ = checkpoint.read(path)
    ae = AutoEncoder(checkpoint.config_from(AEConfig, cfg))
    checkpoint.load_into(ae, tensors, path)
    return ae.eval()


def load_model(path: str | Path = DEFAULT_MODEL) -> VideoDiT:
    tensors, cfg, _ = checkpoint.read(path)
    model = VideoDiT(checkpoint.config_from(ModelConfig, cfg))
    checkpoint.load_into(model, tensors, path)
    return model.eval()


def load_head(path: str | Path | None = None, labels: str = "sse") -> SalienceHead:
    """A PaFu-KV Salience Estimation Head: `path`, else the shipped head trained on `labels`."""
    path = Path(path) if path is not None else MODELS_DIR / head_file(labels)
    if not path.is_file():
        folder = "" if path.parent.resolve() == MODELS_DIR else f" --models-dir {path.parent}"
        raise FileNotFoundError(
            f"no salience head at {path}; train it with `python -m backend.train salience --labels {labels}{folder}`"
            + (" (with --model wan:DIR for a Wan generator)" if folder else "")
        )
    tensors, cfg, _ = checkpoint.read(path)
    head = SalienceHead(checkpoint.config_from(SEHConfig, cfg))
    checkpoint.load_into(head, tensors, path)
    return head.eval()


def folder_autoencoder(folder: str | Path) -> Path:
    """The autoencoder of a models folder, else the shipped one. Training stages encode with it (a run's
    `--models-dir` holds its own when it trained one, e.g. the quick recipe end to end), so a student is
    evaluated with the autoencoder of its own folder."""
    path = Path(folder) / "autoencoder.safetensors"
    return path if path.is_file() else DEFAULT_AE


@functools.lru_cache(maxsize=2)
def student_and_ae(path: str) -> tuple[VideoDiT, AutoEncoder]:
    """A student weights file and the autoencoder it was trained on (`folder_autoencoder` of its folder),
    loaded once per process (benchmark workers)."""
    return load_model(path), load_autoencoder(folder_autoencoder(Path(path).parent))


def folder_student(folder: str | Path) -> Path:
    """The student weights of a models folder (the shipped one, or a training run's `--models-dir`)."""
    path = Path(folder) / "student.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"no student.safetensors in {folder}: a models folder holds the weights a training "
            "run writes with `python -m backend.train student --models-dir FOLDER`"
        )
    return path


def shipped() -> tuple[VideoDiT, AutoEncoder]:
    """The shipped student and autoencoder, loaded once per process."""
    return student_and_ae(str(DEFAULT_MODEL))


def random_model(preset: str = "tiny", seed: int = 0) -> VideoDiT:
    """A seeded random model of a preset (tests): the same weights whatever drew random numbers before;
    zero-initialised output layers get small weights so that the network is not the identity."""
    if preset not in MODEL_PRESETS:
        raise KeyError(f"unknown preset {preset!r}; known: {', '.join(MODEL_PRESETS)}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the default initialisation too, whatever ran before
        torch.manual_seed(seed)
        model = VideoDiT(MODEL_PRESETS[preset])
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def file_hash(path: str | Path) -> str:
    """sha256 (first 16 hex digits) of a weights file, recorded in sessions and benchmark results."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def weights_tag(names: tuple[str, ...] = ("student", "autoencoder", "salience_head"), sampler=None) -> str:
    """Short id of what a cached benchmark result depends on, so resumed runs never mix weights or sampler
    settings: the first 6 hex digits of each shipped file's hash, joined by '-', then 's' and 4 hex digits
    of the SamplerConfig `sampler` (default: the shipped sampler)."""
    files = [
        file_hash(MODELS_DIR / f"{n}.safetensors")[:6] for n in names if (MODELS_DIR / f"{n}.safetensors").is_file()
    ]
    return "-".join(files + ["s" + hashlib.sha256(repr(sampler or SamplerConfig()).encode()).hexdigest()[:4]])
