"""Config dataclasses and the model preset registry (DiT-style `MODEL_PRESETS`)."""

from __future__ import annotations

from dataclasses import dataclass

from .prompt import N_PROMPT_TOKENS, PROMPT_VOCAB_SIZE


@dataclass(frozen=True)
class ModelConfig:
    latent_ch: int = 8  # channels of one latent token (the autoencoder's C)
    grid: int = 8  # latent tokens per side: grid**2 tokens per frame
    dim: int = 128
    n_layer: int = 4
    n_head: int = 4
    mlp_ratio: float = 4.0
    n_prompt: int = N_PROMPT_TOKENS
    prompt_vocab: int = PROMPT_VOCAB_SIZE
    rope_split: tuple[int, int, int] = (16, 8, 8)  # head dims rotated by t, y, x (sum = head_dim)
    rope_theta: tuple[float, float, float] = (10000.0, 100.0, 100.0)
    chunk_frames: int = 1  # latent frames generated per AR chunk
    attn_block: int = 256  # query block of the explicit (statistics) attention path
    # object tokens as the sum of a per-(slot, colour, shape) embedding and shared colour and shape embeddings
    # (models/dit.py `embed_prompt`): "square" is one vector whatever its colour and slot
    prompt_factors: bool = False

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    def __post_init__(self):
        if self.dim % self.n_head:
            raise ValueError("dim must be divisible by n_head")
        if sum(self.rope_split) != self.head_dim or any(d % 2 for d in self.rope_split):
            raise ValueError(f"rope_split {self.rope_split} must be even and sum to head_dim {self.head_dim}")


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 4  # denoise steps per chunk
    shift: float = 2.0  # timestep shift (more steps at high noise, as in SD3 / Wan)
    renoise: bool = True  # x0 -> fresh noise at the next level (Self-Forcing); False = Euler ODE
    context_noise: float = 0.0  # noise level s of the commit pass: it caches K/V of (1 - s) x0 + s eps
    # the first chunk has no context and a multimodal target: more steps of the ODE (Euler) sample it far
    # better than 4 re-noising steps (chosen on validation prompts: docs/decisions/sampler.md)
    first_steps: int | None = 16  # denoise steps of the first chunk; None = steps
    first_renoise: bool | None = False  # sampler of the first chunk; None = renoise
    # colour guidance: v = v_open + g (v_prompt - v_open), where v_open is the velocity under the same prompt
    # with its object colours left open (a prompt kind the model is trained on, so no null-prompt training
    # is needed), read over the same cache with only the prompt tokens swapped (forward_chunk's prompt_kv),
    # so it works under every cache policy. 1.0 = off; a prompt with no named colour is never guided.
    # Our reconstruction of classifier-free guidance for a cached AR model; scales chosen on validation
    # prompts (docs/decisions/sampler.md). Costs one more read-only pass per denoise step.
    guidance: float = 4.0  # every chunk after the first
    first_guidance: float = 4.0  # the first chunk
    # shape guidance, composed with colour guidance (Liu et al. 2022, composable diffusion, with a negative
    # reference): v += (s - 1) (v_prompt - v_swapped), where v_swapped is the velocity under the same prompt with
    # every object's shape moved to the next shape (each colour bound to a wrong shape), read over the same
    # cache like v_open; every chunk. 1.0 = off (a model without object shapes, e.g. Wan, is never guided).
    # The binding diagnosis found the shape word barely moving the denoiser (docs/results/binding/); costs one
    # more read-only pass per denoise step.
    shape_guidance: float = 1.0

    def __post_init__(self):  # one spelling per setting (1 and 1.0 are the same sampler, and hash the same)
        for name in ("shift", "context_noise", "guidance", "first_guidance", "shape_guidance"):
            object.__setattr__(self, name, float(getattr(self, name)))


MODEL_PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(dim=32, n_layer=2, n_head=2, rope_split=(8, 4, 4), attn_block=16),
    "default": ModelConfig(),  # 128 x 4 layers, ~1.2M params
    "large": ModelConfig(dim=192, n_layer=6, n_head=6),  # ~4M params, for a GPU run
    "factored": ModelConfig(prompt_factors=True),  # default + shared colour and shape embeddings
    # on the `fine` autoencoder's 16x16x4 latents (256 tokens per frame): the latent-resolution question
    "fine": ModelConfig(latent_ch=4, grid=16, prompt_factors=True),
    "large_factored": ModelConfig(dim=192, n_layer=6, n_head=6, prompt_factors=True),
}
