"""Tiny random Wan parts built in the tests (nothing downloaded): a 2-block transformer (2 heads x 12, the shape
diffusers' own tests use), a small Wan VAE, a 1-layer UMT5 encoder and a word-level tokenizer."""

from __future__ import annotations

import torch

WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "circle", "cat", "on", "the", "beach", "walks", "blue"]
TEXT_DIM = 16


def tiny_transformer(seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    ).eval()


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.0, 0.3],
        latents_std=[1.5, 0.8, 1.0, 2.0],
    ).eval()


def tiny_text(seed: int = 0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    cfg = UMT5Config(
        vocab_size=len(WORDS),
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
    )
    return tokenizer, UMT5EncoderModel(cfg).eval()


def tiny_wan(seed: int = 0, max_length: int = 8):
    """(model, decoder): the tiny generator over 64x64 frames (8x8 latents, a 4x4 token grid, 3-frame chunks)."""
    from backend.models.wan import WanCausal
    from backend.models.wan_parts import WanStreamDecoder, WanText

    tokenizer, encoder = tiny_text(seed)
    model = WanCausal(tiny_transformer(seed), WanText(tokenizer, encoder, max_length), frame_size=(64, 64))
    return model, WanStreamDecoder(tiny_vae(seed))


def save_folder(folder, model, decoder):
    """Write a tiny generator as a diffusers-format model folder (what `--model wan:DIR` loads)."""
    from pathlib import Path

    folder = Path(folder)
    model.tr.save_pretrained(folder / "transformer", safe_serialization=True)
    decoder.vae.save_pretrained(folder / "vae", safe_serialization=True)
    model.text.encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    model.text.tokenizer.save_pretrained(folder / "tokenizer")
    return folder
