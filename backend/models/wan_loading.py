"""Loading a Wan2.1-based generator from local folders only (no hub access), and converting Self-Forcing /
CausVid generator checkpoints from the original Wan key layout to diffusers'.

A model folder is a diffusers-format Wan2.1-T2V-1.3B folder: `transformer/`, `vae/`, `text_encoder/`,
`tokenizer/` (each as `save_pretrained` writes it, weights as safetensors). A generator checkpoint (optional)
replaces the transformer's weights: a `.safetensors` file in either layout, or a `.pt` checkpoint read with
`torch.load(weights_only=True)` (tensors and plain containers only: no pickled code ever runs), from which the
EMA generator is preferred (`generator_ema`, then `generator`, then the file itself as a state dict).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..checkpoint import CheckpointError

__all__ = [
    "CheckpointError",
    "load_wan",
    "load_wan_teacher",
    "wan_identity",
    "wan_options",
    "read_generator",
    "load_generator_into",
    "convert",
    "check_folder",
]

PARTS = ("transformer", "vae", "text_encoder", "tokenizer")
PREFIXES = ("module.", "_fsdp_wrapped_module.", "model.")  # wrappers around the original WanModel's keys

# original Wan (`wan/modules/model.py`, the layout Self-Forcing and CausVid save) -> diffusers, per block and
# for the rest; a key matching none is refused
_BLOCK = [
    (r"self_attn\.q\.", "attn1.to_q."),
    (r"self_attn\.k\.", "attn1.to_k."),
    (r"self_attn\.v\.", "attn1.to_v."),
    (r"self_attn\.o\.", "attn1.to_out.0."),
    (r"self_attn\.norm_q\.", "attn1.norm_q."),
    (r"self_attn\.norm_k\.", "attn1.norm_k."),
    (r"cross_attn\.q\.", "attn2.to_q."),
    (r"cross_attn\.k\.", "attn2.to_k."),
    (r"cross_attn\.v\.", "attn2.to_v."),
    (r"cross_attn\.o\.", "attn2.to_out.0."),
    (r"cross_attn\.norm_q\.", "attn2.norm_q."),
    (r"cross_attn\.norm_k\.", "attn2.norm_k."),
    (r"norm3\.", "norm2."),  # the cross-attention norm: norm3 in the original, norm2 in diffusers
    (r"ffn\.0\.", "ffn.net.0.proj."),
    (r"ffn\.2\.", "ffn.net.2."),
    (r"modulation$", "scale_shift_table"),
]
_TOP = [
    (r"patch_embedding\.", "patch_embedding."),
    (r"text_embedding\.0\.", "condition_embedder.text_embedder.linear_1."),
    (r"text_embedding\.2\.", "condition_embedder.text_embedder.linear_2."),
    (r"time_embedding\.0\.", "condition_embedder.time_embedder.linear_1."),
    (r"time_embedding\.2\.", "condition_embedder.time_embedder.linear_2."),
    (r"time_projection\.1\.", "condition_embedder.time_proj."),
    (r"head\.head\.", "proj_out."),
    (r"head\.modulation$", "scale_shift_table"),
]


def original_to_diffusers(key: str) -> str:
    """One original-layout key -> its diffusers name (CheckpointError for a key of neither layout)."""
    m = re.match(r"blocks\.(\d+)\.(.+)$", key)
    if m:
        for pat, rep in _BLOCK:
            if re.match(pat, m.group(2)):
                return f"blocks.{m.group(1)}.{re.sub(pat, rep, m.group(2), count=1)}"
    else:
        for pat, rep in _TOP:
            if re.match(pat, key):
                return re.sub(pat, rep, key, count=1)
    raise CheckpointError(f"unexpected key {key!r}: not a Wan2.1 transformer weight (original or diffusers layout)")


def _is_diffusers(keys) -> bool:
    return any(k.startswith(("condition_embedder.", "proj_out.")) or ".attn1." in k for k in keys)


def to_diffusers(state: dict) -> dict[str, torch.Tensor]:
    """A generator state dict in either layout, wrapper prefixes stripped -> diffusers names."""
    out = {}
    for key, value in state.items():
        if not torch.is_tensor(value):
            raise CheckpointError(f"entry {key!r} is a {type(value).__name__}, not a tensor")
        for p in PREFIXES:
            if key.startswith(p):
                key = key[len(p) :]
        out[key] = value
    if _is_diffusers(out):
        return out
    return {original_to_diffusers(k): v for k, v in out.items()}


def read_generator(path: str | Path) -> dict[str, torch.Tensor]:
    """The generator's weights from a `.safetensors` or `.pt` file, in diffusers names."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no generator checkpoint at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return to_diffusers(load_file(str(path)))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise CheckpointError(f"{path.name} is not a weights-only checkpoint (refused, nothing executed): {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a state dict")
    for key in ("generator_ema", "generator", "state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return to_diffusers(obj)


def load_generator_into(transformer, state: dict[str, torch.Tensor]) -> None:
    """Copy a diffusers-named state dict into the transformer; every key and shape must match."""
    own = transformer.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    if unexpected or missing:
        raise CheckpointError(
            "the checkpoint does not fit this transformer: "
            + (f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}; " if unexpected else "")
            + (f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "")
        )
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{len(bad)} weight(s) of the wrong shape, e.g. {k}: {tuple(state[k].shape)} for {tuple(own[k].shape)}"
        )
    transformer.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def check_folder(folder: str | Path) -> Path:
    """The model folder, or a CheckpointError naming every part it lacks."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"no model folder at {folder}")
    missing = [p for p in PARTS if not (folder / p).is_dir()]
    if missing:
        raise CheckpointError(
            f"{folder} is not a diffusers-format Wan2.1 folder: missing {', '.join(f'{p}/' for p in missing)} "
            f"(expected {', '.join(f'{p}/' for p in PARTS)})"
        )
    return folder


def load_wan(
    folder: str | Path,
    generator: str | Path | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    chunk_frames: int = 3,
    frame_size: tuple[int, int] = (480, 832),
    max_length: int = 512,
):
    """(model, decoder) from a local folder (see the module docstring): `WanCausal` and `WanStreamDecoder`.
    Weights load from safetensors only (the folder's parts) or weights-only `.pt` (the generator)."""
    from diffusers import AutoencoderKLWan
    from transformers import AutoTokenizer, UMT5EncoderModel

    from .wan import WanCausal
    from .wan_parts import WanStreamDecoder, WanText

    folder = check_folder(folder)
    kw = dict(local_files_only=True, use_safetensors=True)
    transformer = _transformer(folder, dtype)
    try:
        vae = AutoencoderKLWan.from_pretrained(folder / "vae", torch_dtype=torch.float32, **kw)
        encoder = UMT5EncoderModel.from_pretrained(folder / "text_encoder", dtype=dtype, **kw)
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load the Wan parts from {folder}: {e}") from e
    if generator is not None:
        load_generator_into(transformer, read_generator(generator))
    model = WanCausal(
        transformer.to(device).eval(),
        WanText(tokenizer, encoder.to(device).eval(), max_length),
        chunk_frames=chunk_frames,
        frame_size=frame_size,
    )
    return model, WanStreamDecoder(vae.to(device).eval())


def _transformer(folder: Path, dtype: torch.dtype):
    from diffusers import WanTransformer3DModel

    kw = dict(local_files_only=True, use_safetensors=True)
    try:
        return WanTransformer3DModel.from_pretrained(folder / "transformer", torch_dtype=dtype, **kw)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load the Wan transformer from {folder}: {e}") from e


def load_wan_teacher(folder: str | Path, student, generator: str | Path | None = None):
    """PaFu-KV's bidirectional teacher for the generator `student` (`load_wan(folder, generator, ...)`): the
    folder's own Wan2.1 transformer (the model Self-Forcing and CausVid distil from), run over whole clips without
    a causal mask (`WanCausal.teacher_attention`), on the student's device, dtype and geometry. Without a
    `generator` the student's transformer holds exactly those weights and is shared, not loaded twice. It takes
    the student's text condition, so it carries no text encoder."""
    from .wan import WanCausal

    geo = student.geometry
    tr = student.tr
    if generator is not None:
        w = student.tr.proj_out.weight
        tr = _transformer(check_folder(folder), w.dtype).to(w.device).eval()
    return WanCausal(tr, None, chunk_frames=geo.chunk_frames, frame_size=geo.frame_size)


def add_wan_arguments(parser, device: bool = True) -> None:
    """The command-line options of a Wan generator (`--model wan:DIR`), one definition for the app, `generate`
    and `train salience`; `device=False` where the parser has its own --device."""
    parser.add_argument(
        "--generator",
        default=None,
        help="with wan:DIR: a Self-Forcing / CausVid generator checkpoint (.pt read weights-only, or .safetensors)",
    )
    if device:
        parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="with wan:DIR (default cpu)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), help="with wan:DIR (default bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--size", default="480x832", help="with wan:DIR: frame HEIGHTxWIDTH (default 480x832)")


def wan_only_given(a) -> list[str]:
    """The Wan generator's options set on parsed arguments `a` (an error where no Wan generator is loaded)."""
    given = [("--generator", a.generator), ("--dtype", a.dtype), ("--device", getattr(a, "device", "cpu") != "cpu")]
    return [name for name, value in given if value]


def wan_options(device: str = "cpu", dtype: str | None = None, size: str = "480x832"):
    """The command-line options of a Wan generator checked: (torch dtype, (height, width)); a ValueError names
    what is wrong. bf16 on a GPU and fp32 on a CPU unless `dtype` says."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if dtype is not None and dtype not in dtypes:
        raise ValueError(f"--dtype must be fp32 or bf16, got {dtype!r}")
    try:
        h, w = (int(x) for x in str(size).lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be HEIGHTxWIDTH in pixels, e.g. 480x832, got {size!r}") from None
    if h <= 0 or w <= 0 or h % 16 or w % 16:
        raise ValueError(f"--size {size}: height and width must be positive multiples of 16")
    return dtypes[dtype or ("bf16" if device == "cuda" else "fp32")], (h, w)


def wan_identity(folder: str | Path, generator: str | Path | None = None) -> str:
    """A short fingerprint of the weights served (the transformer files' and the generator's names, sizes and
    modification times: hashing gigabytes at every start would take longer than loading them)."""
    import hashlib

    files = sorted((Path(folder) / "transformer").glob("*.safetensors")) + ([Path(generator)] if generator else [])
    text = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files if p.is_file())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def convert(generator: str | Path, out: str | Path) -> int:
    """Write a generator checkpoint as diffusers-named safetensors; returns the number of tensors."""
    from safetensors.torch import save_file

    state = read_generator(generator)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return len(state)
