"""The released Qwen3-TTS 12 Hz models in one place: their dimensions and config builders.

Everything that needs a model *shaped like* a released one (the checkpoint factory in
``qwen_tts_ext.testing.tiny_checkpoint``, ``scripts/memory_table.py``, the blend benchmark in
``qwen_tts_ext.blend.bench``) builds its config here, so the numbers are written down once. Ids and
audio facts (codec specials, language ids, rates) live in :mod:`qwen_tts_ext.constants`; this module
adds the dimensions, the text-side special ids and the LLM each talker pairs with in the Darwin blend.

The values are those of the released ``config.json`` files (``Qwen/Qwen3-TTS-12Hz-1.7B-Base``,
``Qwen/Qwen3-TTS-12Hz-0.6B-Base``, ``Qwen/Qwen3-1.7B``, ``Qwen/Qwen3-0.6B``). The ``qwen_tts`` config
classes default to other values (e.g. 20 talker layers, 2 kv heads, codec ids from 4196), so a config
built for a released shape always spells every dimension out. Instantiating the stock
``Qwen3TTSForConditionalGeneration`` from :func:`tts_config` gives 1,928,677,440 parameters (480
tensors) for ``"1.7b"`` and 914,643,008 (478 tensors) for ``"0.6b"``.

    from qwen_tts_ext import released
    released.DIMS["0.6b"].hidden            # 1024
    released.tts_config("0.6b", layers=2)   # a config.json dict, 2 talker layers at real width
    released.llm_config("1.7b")             # Qwen3-1.7B's config.json dict
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qwen_tts_ext import constants as C

SHAPES = ("1.7b", "0.6b")

# Text-side special tokens of the released Qwen2 tokenizer (``config.json``: im_start_token_id, ...),
# keyed by the token strings in ``constants.TEXT_SPECIAL_TOKENS``.
TEXT_SPECIAL_IDS = {
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|tts_pad|>": 151671,
    "<|tts_bos|>": 151672,
    "<|tts_eos|>": 151673,
}
assert tuple(TEXT_SPECIAL_IDS) == C.TEXT_SPECIAL_TOKENS

# Built-in speakers of the released CustomVoice checkpoints whose codec rows are known (rows 2861..3066).
CUSTOM_VOICE_SPEAKERS = {"uncle_fu": 3010, "ryan": 3061, "vivian": 3065, "serena": 3066}

ARCHITECTURE = "Qwen3TTSForConditionalGeneration"
MODEL_TYPE = "qwen3_tts"
TOKENIZER_TYPE = "qwen3_tts_tokenizer_12hz"
TTS_MODEL_TYPES = ("base", "custom_voice", "voice_design")

ROPE_THETA = 1_000_000
RMS_NORM_EPS = 1e-6
TALKER_MAX_POSITIONS = 32768
CODE_PREDICTOR_MAX_POSITIONS = 65536
LLM_MAX_POSITIONS = 40960
LLM_BOS_ID = 151643  # <|endoftext|> in the Qwen3 LLM config


@dataclass(frozen=True)
class ModelDims:
    """Dimensions of a Qwen3-TTS 12 Hz model (talker, code predictor, speaker encoder) and its LLM twin.

    The defaults are the values both released sizes share; :data:`DIMS` holds the released models.
    Other instances (smaller, for tests and the memory table's formula checks) use the same fields.
    """

    name: str
    hidden: int
    intermediate: int
    layers: int = 28
    heads: int = 16
    kv_heads: int = 8
    head_dim: int = 128
    text_vocab: int = 151936
    text_hidden: int = 2048
    codec_vocab: int = C.CODEC_VOCAB_SIZE
    code_groups: int = C.NUM_CODE_GROUPS
    cp_hidden: int = 1024
    cp_intermediate: int = 3072
    cp_layers: int = 5
    cp_heads: int = 16
    cp_kv_heads: int = 8
    cp_head_dim: int = 128
    cp_vocab: int = C.CODEBOOK_SIZE
    speaker_dim: int = 0  # ECAPA-TDNN output (the x-vector lives in the codec embedding space); 0 = hidden
    llm_name: str = ""  # the Qwen3 LLM with the same backbone (the Darwin blend's partner)
    model_size: str = ""  # config.json "tts_model_size"; "" = "1b7" when hidden >= 2048 else "0b6"

    @property
    def enc_dim(self) -> int:
        """The speaker encoder's output size."""
        return self.speaker_dim or self.hidden

    @property
    def tts_model_size(self) -> str:
        return self.model_size or ("1b7" if self.hidden >= 2048 else "0b6")

    def with_layers(self, layers: int | None) -> "ModelDims":
        """The same widths with ``layers`` talker (and LLM) layers; ``None`` keeps the depth."""
        if layers is None or layers == self.layers:
            return self
        if not 1 <= int(layers) <= self.layers:
            raise ValueError(f"layers must be between 1 and {self.layers}, got {layers}")
        return replace(self, layers=int(layers))


DIMS: dict[str, ModelDims] = {
    "1.7b": ModelDims("Qwen3-TTS-12Hz-1.7B", hidden=2048, intermediate=6144, speaker_dim=2048,
                      llm_name="Qwen3-1.7B", model_size="1b7"),
    "0.6b": ModelDims("Qwen3-TTS-12Hz-0.6B", hidden=1024, intermediate=3072, speaker_dim=1024,
                      llm_name="Qwen3-0.6B", model_size="0b6"),
}

# Parameter counts of the full-depth Base models, as the stock classes instantiate them (tests check these).
PARAMETERS = {"1.7b": 1_928_677_440, "0.6b": 914_643_008}


def dims(shape: str | ModelDims, layers: int | None = None) -> ModelDims:
    """The dimensions of ``shape`` ("1.7b" | "0.6b", any case, or a :class:`ModelDims`), optionally shallower."""
    if isinstance(shape, ModelDims):
        d = shape
    else:
        key = str(shape).strip().lower()
        if key not in DIMS:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
        d = DIMS[key]
    return d.with_layers(layers)


def mrope_section(head_dim: int) -> list[int]:
    """Three interleaved-MRoPE sections summing to head_dim / 2, shaped like the released [24, 20, 20] for 128."""
    half = head_dim // 2
    side = half * 20 // 64
    return [half - 2 * side, side, side]


def build_tts_config(
    d: ModelDims,
    *,
    tts_model_type: str = "base",
    text_ids: dict[str, int] | None = None,
    speakers: dict[str, int] | None = None,
    speaker_encoder: dict | None = None,
) -> dict:
    """A ``config.json`` dict laid out like the released ones, for any dimensions.

    ``text_ids``: special-token ids keyed like :data:`TEXT_SPECIAL_IDS` (default: the released ids).
    ``speakers``: the ``spk_id`` table of a CustomVoice model (default: :data:`CUSTOM_VOICE_SPEAKERS`;
    Base models have none). ``speaker_encoder``: the full ``speaker_encoder_config`` (default:
    ``enc_dim`` + ``sample_rate`` as released, the class defaults supplying the ECAPA-TDNN channels).
    """
    if tts_model_type not in TTS_MODEL_TYPES:
        raise ValueError(f"tts_model_type must be one of {', '.join(TTS_MODEL_TYPES)}, got {tts_model_type!r}")
    if d.head_dim % 2 or d.head_dim < 8:
        raise ValueError("head_dim must be even and >= 8 (mrope needs three sections)")
    ids = dict(TEXT_SPECIAL_IDS if text_ids is None else text_ids)
    spk_id = {}
    if tts_model_type == "custom_voice":
        spk_id = dict(CUSTOM_VOICE_SPEAKERS if speakers is None else speakers)
    talker = {
        "vocab_size": d.codec_vocab,
        "hidden_size": d.hidden,
        "intermediate_size": d.intermediate,
        "num_hidden_layers": d.layers,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "head_dim": d.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": TALKER_MAX_POSITIONS,
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_theta": ROPE_THETA,
        "rope_scaling": {"rope_type": "default", "mrope_section": mrope_section(d.head_dim), "interleaved": True},
        "attention_bias": False,
        "num_code_groups": d.code_groups,
        "text_hidden_size": d.text_hidden,
        "text_vocab_size": d.text_vocab,
        **C.CODEC_SPECIAL_IDS,
        "codec_language_id": dict(C.CODEC_LANGUAGE_IDS),
        "spk_id": spk_id,
        "spk_is_dialect": {name: False for name in spk_id},
        "code_predictor_config": {
            "vocab_size": d.cp_vocab,
            "hidden_size": d.cp_hidden,
            "intermediate_size": d.cp_intermediate,
            "num_hidden_layers": d.cp_layers,
            "num_attention_heads": d.cp_heads,
            "num_key_value_heads": d.cp_kv_heads,
            "head_dim": d.cp_head_dim,
            "max_position_embeddings": CODE_PREDICTOR_MAX_POSITIONS,
            "rms_norm_eps": RMS_NORM_EPS,
            "rope_theta": ROPE_THETA,
            "num_code_groups": d.code_groups,
        },
    }
    if speaker_encoder is None:
        speaker_encoder = {"enc_dim": d.enc_dim, "sample_rate": C.SAMPLE_RATE}
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "tokenizer_type": TOKENIZER_TYPE,
        "tts_model_size": d.tts_model_size,
        "tts_model_type": tts_model_type,
        "im_start_token_id": ids["<|im_start|>"],
        "im_end_token_id": ids["<|im_end|>"],
        "tts_pad_token_id": ids["<|tts_pad|>"],
        "tts_bos_token_id": ids["<|tts_bos|>"],
        "tts_eos_token_id": ids["<|tts_eos|>"],
        "talker_config": talker,
        "speaker_encoder_config": dict(speaker_encoder),
    }


def tts_config(shape: str | ModelDims, *, layers: int | None = None, tts_model_type: str = "base") -> dict:
    """The ``config.json`` dict of a released model (``shape`` "1.7b" | "0.6b") with the real special ids.

    ``layers`` (1..28) keeps the real width with fewer talker layers, for quick runs; the code
    predictor (5 layers) and the speaker encoder keep their released shapes.
    """
    return build_tts_config(dims(shape, layers), tts_model_type=tts_model_type)


def llm_config(shape: str | ModelDims, *, layers: int | None = None) -> dict:
    """The ``config.json`` dict of the Qwen3 LLM whose FFNs match the talker of ``shape`` (Qwen3-1.7B / -0.6B)."""
    d = dims(shape, layers)
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": d.text_vocab,
        "hidden_size": d.hidden,
        "intermediate_size": d.intermediate,
        "num_hidden_layers": d.layers,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "head_dim": d.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": LLM_MAX_POSITIONS,
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_theta": ROPE_THETA,
        "tie_word_embeddings": True,
        "bos_token_id": LLM_BOS_ID,
        "eos_token_id": TEXT_SPECIAL_IDS["<|im_end|>"],
    }


def class_kwargs(config: dict) -> dict:
    """``config`` without the keys a config class's ``__init__`` must not receive (model_type, architectures)."""
    return {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
