"""Build complete, tiny, randomly initialised Qwen3-TTS 12 Hz checkpoints (and a matching Qwen3 LLM).

The real checkpoints cannot be downloaded in CI, so every test and the demo run on folders built
here. A folder is a *full* model directory that the stock ``qwen_tts.Qwen3TTSModel.from_pretrained``
loads offline: ``config.json``, ``model.safetensors``, ``generation_config.json``, text tokenizer
files, and ``speech_tokenizer/`` (a tiny Mimi-based ``Qwen3TTSTokenizerV2`` at 24 kHz, 1920 samples
per frame, 16 codebooks of 2048). Nothing in the suite special-cases these folders: they only differ
from the released ones in their dimensions.

Variants mirror the released family:
- ``1.7b``: text_hidden_size == hidden_size, code predictor narrower than the talker
  (so ``small_to_mtp_projection`` is a real Linear).
- ``0.6b``: text_hidden_size != hidden_size (``talker.text_projection`` really projects),
  code predictor as wide as the talker (the projection is an Identity), ``tts_model_size`` "0b6".

``build_released_tts`` builds the *released* shapes instead (``0.6b`` / ``1.7b`` from
:mod:`qwen_tts_ext.released`: real width, the 151,936-row text vocabulary, real heads, code
predictor and speaker encoder, optionally fewer talker layers) with random weights streamed from a
``meta``-device model, for memory, speed and loader checks at real size.

Command line (also ``qwen-tts-ext make-tiny ...``)::

    python -m qwen_tts_ext.testing.tiny_checkpoint tts OUT_DIR [--type base|custom_voice] [--variant 1.7b|0.6b]
    python -m qwen_tts_ext.testing.tiny_checkpoint tts OUT_DIR --shape 0.6b|1.7b [--layers N] [--type ...]
    python -m qwen_tts_ext.testing.tiny_checkpoint llm OUT_DIR --like TTS_DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qwen_tts_ext import constants as C
from qwen_tts_ext import released as R
from qwen_tts_ext.checkpoint_io import drop_empty_model_type
from qwen_tts_ext.outputs import output_dir

# Byte-level BPE merges that make these words single tokens; "assistant" must be one token because
# qwen_tts slices the prompt "<|im_start|>assistant\n..." by position (input_id[:, :3]).
_WHOLE_WORDS = ("assistant", "user", "the", "and")
TEXT_VOCAB_SIZE = 512  # byte alphabet + merges + specials, padded to a round number


@dataclass(frozen=True)
class TinySpec:
    """Dimensions of a tiny checkpoint. Defaults give a ~3 MB float32 model that runs in seconds."""

    variant: str = "1.7b"  # "1.7b" | "0.6b"
    tts_model_type: str = "base"  # "base" | "custom_voice"
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    text_hidden_size: int | None = None  # defaults by variant
    code_predictor_hidden_size: int | None = None  # defaults by variant
    code_predictor_layers: int = 1
    max_new_tokens: int = 96
    builtin_speakers: dict = field(default_factory=lambda: {"vivian": 3065, "ryan": 3061})

    @property
    def text_hidden(self) -> int:
        if self.text_hidden_size is not None:
            return self.text_hidden_size
        return self.hidden_size if self.variant == "1.7b" else 2 * self.hidden_size

    @property
    def cp_hidden(self) -> int:
        if self.code_predictor_hidden_size is not None:
            return self.code_predictor_hidden_size
        return self.hidden_size // 2 if self.variant == "1.7b" else self.hidden_size

    def dims(self) -> R.ModelDims:
        """These dimensions as :class:`qwen_tts_ext.released.ModelDims` (the config builder's input)."""
        return R.ModelDims(
            f"tiny-{self.variant}", hidden=self.hidden_size, intermediate=self.intermediate_size,
            layers=self.num_hidden_layers, heads=self.num_attention_heads, kv_heads=self.num_key_value_heads,
            head_dim=self.head_dim, text_vocab=TEXT_VOCAB_SIZE, text_hidden=self.text_hidden,
            cp_hidden=self.cp_hidden, cp_intermediate=2 * self.cp_hidden, cp_layers=self.code_predictor_layers,
            cp_heads=self.num_attention_heads, cp_kv_heads=self.num_key_value_heads, cp_head_dim=self.head_dim,
            speaker_dim=self.hidden_size, model_size="0b6" if self.variant == "0.6b" else "1b7",
        )

    def validate(self) -> None:
        if self.variant not in ("1.7b", "0.6b"):
            raise ValueError(f"variant must be '1.7b' or '0.6b', got {self.variant!r}")
        if self.tts_model_type not in ("base", "custom_voice"):
            raise ValueError(f"tts_model_type must be 'base' or 'custom_voice', got {self.tts_model_type!r}")
        if self.head_dim % 2 or self.head_dim < 8:
            raise ValueError("head_dim must be even and >= 8 (mrope needs three sections)")


# --------------------------------------------------------------------------- text tokenizer


def _text_special_ids() -> dict[str, int]:
    base = TEXT_VOCAB_SIZE - 16
    return {tok: base + i for i, tok in enumerate(C.TEXT_SPECIAL_TOKENS)}


def build_text_tokenizer(out_dir: str | os.PathLike, special_ids: dict[str, int] | None = None) -> dict[str, int]:
    """Write a tiny byte-level BPE Qwen2 tokenizer into ``out_dir``; return the special-token ids.

    ``special_ids`` places the special tokens (default: just above the tiny vocabulary). With
    :data:`qwen_tts_ext.released.TEXT_SPECIAL_IDS` the tokenizer covers the released id range: the
    ids below the first special are unused placeholders (same byte-level merges), the ids between
    specials are reserved special tokens, so ``<|im_start|>`` is 151644 and ``<|tts_eos|>`` 151673.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    alphabet.sort()
    vocab: dict[str, int] = {ch: i for i, ch in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    for word in _WHOLE_WORDS:
        cur = word[0]
        for ch in word[1:]:
            merged = cur + ch
            if merged not in vocab:
                merges.append((cur, ch))
                vocab[merged] = len(vocab)
            cur = merged
    specials = dict(special_ids or _text_special_ids())
    if len(vocab) >= min(specials.values()):
        raise RuntimeError("tiny text vocabulary overflows into the special-token range")
    # Fill the gap so ids are dense up to the specials (unused placeholder tokens).
    for i in range(len(vocab), min(specials.values())):
        vocab[f"<|unused_{i}|>"] = i

    model = models.BPE(vocab=vocab, merges=merges, byte_fallback=False, fuse_unk=False)
    tok = Tokenizer(model)
    # The Qwen2 pre-tokenizer: split on the GPT-4-style regex, then map bytes to unicode.
    qwen_pattern = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(qwen_pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    from tokenizers import AddedToken

    by_id = {i: t for t, i in specials.items()}
    # every id from the first special to the last: a gap between specials gets a reserved token
    added = [(by_id.get(i, f"<|reserved_{i}|>"), i) for i in range(min(by_id), max(by_id) + 1)]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, _ in added])
    for t, i in added:
        if tok.token_to_id(t) != i:
            raise RuntimeError(f"special token {t} got id {tok.token_to_id(t)}, expected {i}")

    fast = Qwen2TokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|tts_pad|>",
        unk_token=None,
        model_max_length=32768,
    )
    fast.save_pretrained(str(out_dir))
    # Slow-tokenizer files too, as the released checkpoints ship them.
    Path(out_dir, "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    Path(out_dir, "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    cfg_path = Path(out_dir, "tokenizer_config.json")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    return specials


# --------------------------------------------------------------------------- speech tokenizer


def speech_tokenizer_config_dict() -> dict:
    """A tiny ``Qwen3TTSTokenizerV2Config`` with the released rates: 24 kHz, 1920 samples/frame, 16 x 2048."""
    return {
        "model_type": "qwen3_tts_tokenizer_12hz",
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "encoder_valid_num_quantizers": C.NUM_CODE_GROUPS,
        "input_sample_rate": C.SAMPLE_RATE,
        "output_sample_rate": C.SAMPLE_RATE,
        "decode_upsample_rate": C.SAMPLES_PER_FRAME,
        "encode_downsample_rate": C.SAMPLES_PER_FRAME,
        "encoder_config": {
            "sampling_rate": C.SAMPLE_RATE,
            "frame_rate": C.FRAME_RATE,
            "audio_channels": 1,
            "hidden_size": 32,
            "num_filters": 4,
            "num_residual_layers": 1,
            "upsampling_ratios": [8, 6, 5, 4],
            "kernel_size": 7,
            "last_kernel_size": 3,
            "residual_kernel_size": 3,
            "dilation_growth_rate": 2,
            "use_causal_conv": True,
            "pad_mode": "constant",
            "compress": 2,
            "codebook_size": C.CODEBOOK_SIZE,
            "codebook_dim": 16,
            "num_quantizers": C.NUM_CODE_GROUPS,
            "vector_quantization_hidden_dimension": 16,
            "num_semantic_quantizers": 1,
            "upsample_groups": 32,
            "num_hidden_layers": 1,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "hidden_act": "gelu",
            "max_position_embeddings": 8000,
            "sliding_window": 250,
            "use_cache": False,
        },
        "decoder_config": {
            "codebook_size": C.CODEBOOK_SIZE,
            "codebook_dim": 16,
            "hidden_size": 32,
            "latent_dim": 32,
            "max_position_embeddings": 8000,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_quantizers": C.NUM_CODE_GROUPS,
            "upsample_rates": [8, 5, 4, 3],
            "upsampling_ratios": [2, 2],
            "decoder_dim": 32,
            "sliding_window": 72,
        },
    }


def _fan_in_init_(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Re-initialise conv/linear layers with 1/sqrt(fan_in) std so a random decoder makes audible output."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d, torch.nn.Linear)):
            w = m.weight
            fan_in = w.shape[1] * (w.shape[2] if w.dim() == 3 else 1)
            if isinstance(m, torch.nn.ConvTranspose1d):
                fan_in = w.shape[0] * w.shape[2] // max(1, (m.stride[0]))
            with torch.no_grad():
                w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(max(1, fan_in)))
                if m.bias is not None:
                    m.bias.zero_()


def build_speech_tokenizer(out_dir: str | os.PathLike, seed: int = 0) -> None:
    """Write ``out_dir`` with config.json, model.safetensors and preprocessor_config.json."""
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model
    from transformers import EncodecFeatureExtractor

    gen = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed + 1)
    cfg_dict = speech_tokenizer_config_dict()
    config = Qwen3TTSTokenizerV2Config(**{k: v for k, v in cfg_dict.items() if k not in ("model_type", "architectures")})
    model = Qwen3TTSTokenizerV2Model(config).eval()
    with torch.no_grad():
        # Encoder (Mimi) codebooks are zero buffers at init: every frame would encode to code 0.
        for name, buf in model.encoder.named_buffers():
            if name.endswith("embed_sum"):
                buf.copy_(torch.randn(buf.shape, generator=gen))
            elif name.endswith("cluster_usage"):
                buf.fill_(1.0)
        # Decoder codebooks are zero parameters: give them random centroids as well.
        for name, p in model.decoder.named_parameters():
            if name.endswith("embedding_sum"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif name.endswith("cluster_usage"):
                p.fill_(1.0)
        _fan_in_init_(model.encoder.encoder, gen)
        _fan_in_init_(model.decoder.decoder, gen)
        _fan_in_init_(model.decoder.upsample, gen)
        _fan_in_init_(model.decoder.pre_conv, gen)
        _fan_in_init_(model.decoder.quantizer, gen)
        # Scale the last conv so random codes decode to speech-like levels (std ~0.1), not a clipped square wave.
        probe = torch.randint(0, C.CODEBOOK_SIZE, (1, C.NUM_CODE_GROUPS, 8), generator=gen)
        last = model.decoder.decoder[-1].conv
        for _ in range(3):
            std = float(model.decoder(probe).std())
            last.weight.mul_(0.1 / max(std, 1e-6))
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    EncodecFeatureExtractor(
        feature_size=1, sampling_rate=C.SAMPLE_RATE, padding_value=0.0, return_attention_mask=True
    ).save_pretrained(str(out_dir))
    # Keep model_type/architectures as the released file spells them.
    cfg_path = Path(out_dir, "config.json")
    saved = json.loads(cfg_path.read_text())
    saved["model_type"] = "qwen3_tts_tokenizer_12hz"
    saved["architectures"] = ["Qwen3TTSTokenizerV2Model"]
    cfg_path.write_text(json.dumps(saved, indent=2))


# --------------------------------------------------------------------------- TTS model


def tts_config_dict(spec: TinySpec, text_ids: dict[str, int]) -> dict:
    """The full ``config.json`` of a tiny Qwen3-TTS checkpoint, laid out like the released ones
    (:func:`qwen_tts_ext.released.build_tts_config` with the tiny dimensions and speaker encoder)."""
    spec.validate()
    speaker_encoder = {
        "mel_dim": 128,
        "enc_dim": spec.hidden_size,  # the x-vector is placed in the codec embedding space
        "enc_channels": [32, 32, 32, 32, 96],
        "enc_kernel_sizes": [5, 3, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 4, 1],
        "enc_attention_channels": 16,
        "enc_res2net_scale": 4,
        "enc_se_channels": 16,
        "sample_rate": C.SAMPLE_RATE,
    }
    return R.build_tts_config(spec.dims(), tts_model_type=spec.tts_model_type, text_ids=text_ids,
                              speakers=dict(spec.builtin_speakers), speaker_encoder=speaker_encoder)


def generation_config_dict(max_new_tokens: int) -> dict:
    return {
        "do_sample": True,
        "top_k": 50,
        "top_p": 1.0,
        "temperature": 0.9,
        "repetition_penalty": 1.05,
        "subtalker_dosample": True,
        "subtalker_top_k": 50,
        "subtalker_top_p": 1.0,
        "subtalker_temperature": 0.9,
        "max_new_tokens": max_new_tokens,
    }


def build_tiny_tts(
    out_dir: str | os.PathLike,
    spec: TinySpec | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
) -> Path:
    """Build a complete tiny checkpoint in ``out_dir`` (atomically) and return its path."""
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration

    spec = spec or TinySpec()
    out_dir = Path(out_dir)
    with output_dir(out_dir, command="make-tiny", overwrite=overwrite) as tmp:
        text_ids = build_text_tokenizer(tmp)
        cfg = tts_config_dict(spec, text_ids)
        config = Qwen3TTSConfig(**{k: v for k, v in cfg.items() if k not in ("model_type", "architectures")})
        torch.manual_seed(seed)
        model = Qwen3TTSForConditionalGeneration(config).eval()
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            if model.speaker_encoder is not None:
                _fan_in_init_(model.speaker_encoder, gen)
            # Built-in speakers of a CustomVoice checkpoint get distinct, clearly non-random rows.
            emb = model.talker.model.codec_embedding.weight
            for row in spec.builtin_speakers.values() if spec.tts_model_type == "custom_voice" else ():
                emb[row] = torch.randn(emb.shape[1], generator=gen)
        model = model.to(dtype)
        model.save_pretrained(str(tmp), safe_serialization=True)
        config_path = tmp / "config.json"
        saved = json.loads(config_path.read_text())
        saved["tts_model_size"] = cfg["tts_model_size"]
        saved["architectures"] = cfg["architectures"]
        config_path.write_text(json.dumps(drop_empty_model_type(saved), indent=2))
        (tmp / "generation_config.json").write_text(json.dumps(generation_config_dict(spec.max_new_tokens), indent=2))
        build_speech_tokenizer(tmp / "speech_tokenizer", seed=seed)
        (tmp / "tiny_checkpoint.json").write_text(
            json.dumps({"built_by": "qwen_tts_ext.testing.tiny_checkpoint", "seed": seed, "spec": spec.__dict__,
                        "dtype": str(dtype).replace("torch.", "")}, indent=2, default=str)
        )
    return out_dir


# --------------------------------------------------------------------------- released shapes, random weights

_POOL_SIZE = 8 << 20  # values in the random pool that large tensors are tiled from
_TILE = 1 << 20  # elements copied from one random pool offset


def random_init_specs(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, shape, init)`` for every tensor ``save_pretrained`` writes (tied tensors once), in order.

    Works on a ``meta``-device model (nothing allocated). ``init`` is what a sane random model has
    there: ``"normal"`` (Linear/Embedding weights and anything else: N(0, 0.02) as ``_init_weights``),
    ``"fan_in"`` (conv weights: N(0, 1/fan_in), so the speaker encoder's output is neither 0 nor huge),
    ``"ones"`` (norm weights, BatchNorm variances), ``"zeros"`` (biases, BatchNorm means),
    ``"int_zeros"`` (integer buffers such as BatchNorm counters).
    """
    modules = dict(model.named_modules())
    seen, out = set(), []
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:
            continue
        seen.add(id(t))
        owner, _, leaf = name.rpartition(".")
        mod = modules.get(owner)
        if not t.is_floating_point():
            init = "int_zeros"
        elif isinstance(mod, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) and leaf == "weight":
            init = "fan_in"
        elif leaf == "running_var" or ("norm" in type(mod).__name__.lower() and leaf == "weight"):
            init = "ones"
        elif leaf in ("bias", "running_mean"):
            init = "zeros"
        else:
            init = "normal"
        out.append((name, tuple(t.shape), init))
    return out


def write_random_weights(
    specs: list[tuple[str, tuple[int, ...], str]],
    out_dir: str | os.PathLike,
    *,
    seed: int,
    dtype: torch.dtype = torch.bfloat16,
    std: float = 0.02,
    max_shard_bytes: int | None = None,
) -> int:
    """Stream random tensors for ``specs`` (:func:`random_init_specs`) into ``out_dir`` as safetensors.

    No model is materialised and no large tensor is allocated: a ``"normal"`` tensor is written as
    1M-element slices, at random offsets, of one seeded N(0, std) pool (8M values), straight from
    the pool to the file, so the cost is the disk's (``torch.randn`` per tensor takes about a minute
    for a 1.7B model on two cores). Distinct per tensor, the same bytes for the same seed. Floating
    tensors are written in ``dtype``, integer ones as int64 zeros; ``max_shard_bytes`` splits the
    output into Hugging Face shards with an index. Returns the bytes of tensor data written.
    """
    from qwen_tts_ext.checkpoint_io import (TORCH_TO_ST, TensorSpec, plan_shards, safetensors_header, shard_file_names,
                                            write_index)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    pool = (torch.randn(_POOL_SIZE, generator=gen) * std).to(dtype)
    init_of = {name: init for name, _, init in specs}
    st_specs = [TensorSpec(name, "I64" if init == "int_zeros" else TORCH_TO_ST[dtype], tuple(shape))
                for name, shape, init in specs]
    layout = plan_shards(st_specs, max_shard_bytes)
    files = shard_file_names(len(layout))

    def chunks(spec: TensorSpec):
        n, init = math.prod(spec.shape), init_of[spec.name]
        if init == "normal":
            for pos in range(0, n, _TILE):
                k = min(_TILE, n - pos)
                off = int(torch.randint(0, _POOL_SIZE - k + 1, (1,), generator=gen))
                yield pool[off:off + k]
        elif init == "fan_in":
            fan_in = math.prod(spec.shape[1:]) or 1
            yield (torch.randn(n, generator=gen) / math.sqrt(fan_in)).to(dtype)
        elif init == "ones":
            yield torch.ones(n, dtype=dtype)
        else:
            yield torch.zeros(n, dtype=torch.int64 if init == "int_zeros" else dtype)

    for shard, file in zip(layout, files):
        with open(out_dir / file, "wb") as fh:
            fh.write(safetensors_header(shard, {"format": "pt"}))
            for spec in shard:
                for t in chunks(spec):
                    if t.numel():
                        fh.write(memoryview(t.contiguous().view(torch.uint8).numpy()))
    if len(layout) > 1:
        write_index(out_dir, {spec.name: file for shard, file in zip(layout, files) for spec in shard},
                    sum(spec.nbytes for spec in st_specs))
    return sum(spec.nbytes for spec in st_specs)


def build_released_tts(
    out_dir: str | os.PathLike,
    shape: str = "0.6b",
    *,
    layers: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    tts_model_type: str = "base",
    max_new_tokens: int = 96,
    overwrite: bool = False,
) -> Path:
    """A checkpoint with a released model's shape ("0.6b" | "1.7b") and random weights, atomically.

    Real width everywhere: the 151,936 x 2048 text embedding, 16/8 heads of 128, the 5-layer code
    predictor and the ECAPA-TDNN speaker encoder of the released config (:mod:`qwen_tts_ext.released`),
    with the released special ids. ``layers`` keeps fewer talker layers (1..28) for quick runs;
    ``None`` is the full 28 (914,643,008 / 1,928,677,440 parameters).

    Random init never materialises the model: it is instantiated on the ``meta`` device and its
    tensors are streamed to ``model.safetensors`` (:func:`write_random_weights`: norms 1, biases 0,
    convs fan-in scaled, the rest N(0, 0.02)) in constant memory, at the disk's speed: a full 1.7B
    (3.9 GB in bf16) takes under 20 s on two cores, a 2-layer 0.6B (1 GB) about 10 s.
    Not released-shaped: the text tokenizer is the tiny byte-level one, with its special tokens at
    the released ids (151644...) and unused placeholders below, and ``speech_tokenizer/`` is the
    tiny factory's Mimi codec (same rates and 16 x 2048 codebooks, far smaller). The stock
    ``qwen_tts.Qwen3TTSModel.from_pretrained`` loads the folder; it speaks noise.
    """
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration

    d = R.dims(shape, layers)  # validates shape and layers before anything is written
    cfg = R.tts_config(d, tts_model_type=tts_model_type)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    out_dir = Path(out_dir)
    with output_dir(out_dir, command="make-tiny", overwrite=overwrite) as tmp:
        text_ids = build_text_tokenizer(tmp, R.TEXT_SPECIAL_IDS)
        if text_ids != R.TEXT_SPECIAL_IDS:
            raise RuntimeError(f"text tokenizer placed specials at {text_ids}")
        config = Qwen3TTSConfig(**R.class_kwargs(cfg))
        with torch.device("meta"):
            model = Qwen3TTSForConditionalGeneration(config)
        write_random_weights(random_init_specs(model), tmp, seed=seed, dtype=dtype)
        del model
        # config.json as save_pretrained writes it (plus the released file's spelling)
        config.architectures = cfg["architectures"]
        config.dtype = dtype
        config.save_pretrained(str(tmp))
        config_path = tmp / "config.json"
        saved = json.loads(config_path.read_text())
        saved["tts_model_size"] = cfg["tts_model_size"]
        config_path.write_text(json.dumps(drop_empty_model_type(saved), indent=2))
        (tmp / "generation_config.json").write_text(json.dumps(generation_config_dict(max_new_tokens), indent=2))
        build_speech_tokenizer(tmp / "speech_tokenizer", seed=seed)
        (tmp / "tiny_checkpoint.json").write_text(json.dumps({
            "built_by": "qwen_tts_ext.testing.tiny_checkpoint.build_released_tts", "seed": seed,
            "shape": shape, "layers": d.layers, "tts_model_type": tts_model_type,
            "dtype": str(dtype).replace("torch.", ""), "dims": d.__dict__,
        }, indent=2))
    return out_dir


# --------------------------------------------------------------------------- LLM for the Darwin blend


def build_tiny_llm(
    out_dir: str | os.PathLike,
    like: str | os.PathLike | TinySpec | None = None,
    *,
    seed: int = 1,
    dtype: torch.dtype = torch.float32,
    vocab_size: int = TEXT_VOCAB_SIZE,
    overwrite: bool = False,
    **overrides,
) -> Path:
    """A tiny ``Qwen3ForCausalLM`` whose FFN shapes match a tiny talker (``like``: a TTS dir or spec).

    ``overrides`` change config fields (e.g. ``intermediate_size=96``) to build incompatible parents.
    """
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if like is None:
        like = TinySpec()
    if isinstance(like, TinySpec):
        hidden, inter, layers = like.hidden_size, like.intermediate_size, like.num_hidden_layers
        heads, kv, head_dim = like.num_attention_heads, like.num_key_value_heads, like.head_dim
    else:
        t = json.loads(Path(like, "config.json").read_text())["talker_config"]
        hidden, inter, layers = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
        heads, kv, head_dim = t["num_attention_heads"], t["num_key_value_heads"], t.get("head_dim", 128)
    params = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=4096,
        rope_theta=1000000,
        tie_word_embeddings=True,
    )
    params.update(overrides)
    out_dir = Path(out_dir)
    with output_dir(out_dir, command="make-tiny", overwrite=overwrite) as tmp:
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(Qwen3Config(**params)).to(dtype).eval()
        model.save_pretrained(str(tmp), safe_serialization=True)
    return out_dir


# --------------------------------------------------------------------------- CLI

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main(argv: list[str] | None = None) -> int:
    from qwen_tts_ext.errors import UserError, cli_entry

    parser = argparse.ArgumentParser(
        prog="python -m qwen_tts_ext.testing.tiny_checkpoint",
        description="Build tiny, randomly initialised Qwen3-TTS 12Hz checkpoints (and matching Qwen3 LLMs) "
        "that the stock qwen_tts loader accepts, or (--shape) released-shape ones with random weights. "
        "For tests, demos and benchmarks; they speak noise.",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p_tts = sub.add_parser("tts", help="a Qwen3-TTS checkpoint (Base or CustomVoice)")
    p_tts.add_argument("out_dir")
    p_tts.add_argument("--type", choices=["base", "custom_voice"], default="base")
    p_tts.add_argument("--shape", choices=list(R.SHAPES), default=None,
                       help="the released model's shape (real width, 151936-row text vocabulary, real heads, "
                       "code predictor and speaker encoder) with random weights; default: a tiny model")
    p_tts.add_argument("--variant", choices=["1.7b", "0.6b"], default=None,
                       help="tiny only. 1.7b (default): text_hidden == hidden; 0.6b: text_hidden != hidden "
                       "(text_projection matters)")
    p_tts.add_argument("--hidden-size", type=int, default=None, help="tiny only (default 64)")
    p_tts.add_argument("--intermediate-size", type=int, default=None, help="tiny only (default 128)")
    p_tts.add_argument("--layers", type=int, default=None,
                       help="talker layers (tiny: default 2; --shape: 1..28, default 28, at real width)")
    p_llm = sub.add_parser("llm", help="a Qwen3 causal LM with the FFN shapes of a TTS checkpoint")
    p_llm.add_argument("out_dir")
    p_llm.add_argument("--like", required=True, help="a TTS checkpoint directory to match")
    for p in (p_tts, p_llm):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                       help="default float32; bfloat16 (as released) with --shape")
        p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    args = parser.parse_args(argv)

    @cli_entry
    def run() -> int:
        try:
            if args.what == "tts" and args.shape:
                tiny_only = [flag for flag, v in (("--variant", args.variant), ("--hidden-size", args.hidden_size),
                                                  ("--intermediate-size", args.intermediate_size)) if v is not None]
                if tiny_only:
                    raise UserError(f"{', '.join(tiny_only)}: not with --shape (a released shape fixes the "
                                    "dimensions; --layers sets the depth)")
                path = build_released_tts(args.out_dir, args.shape, layers=args.layers, seed=args.seed,
                                          dtype=_DTYPES[args.dtype or "bfloat16"], tts_model_type=args.type,
                                          overwrite=args.overwrite)
            elif args.what == "tts":
                spec = TinySpec(variant=args.variant or "1.7b", tts_model_type=args.type,
                                hidden_size=64 if args.hidden_size is None else args.hidden_size,
                                intermediate_size=128 if args.intermediate_size is None else args.intermediate_size,
                                num_hidden_layers=2 if args.layers is None else args.layers)
                path = build_tiny_tts(args.out_dir, spec, seed=args.seed, dtype=_DTYPES[args.dtype or "float32"],
                                      overwrite=args.overwrite)
            else:
                if not Path(args.like, "config.json").is_file():
                    raise UserError(f"--like {args.like}: no config.json there; pass a TTS checkpoint folder")
                path = build_tiny_llm(args.out_dir, args.like, seed=args.seed, dtype=_DTYPES[args.dtype or "float32"],
                                      overwrite=args.overwrite)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        print(path)
        return 0

    return run()


if __name__ == "__main__":
    raise SystemExit(main())
