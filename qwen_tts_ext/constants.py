"""Facts of the released Qwen3-TTS 12 Hz checkpoints.

These are the ids in the *released* ``config.json`` files; the config classes in ``qwen_tts``
default to other values (4196+, out of range for a 3072-row codec vocabulary). Code that runs on
a real checkpoint always reads ids from its config; these constants are for building new configs.
"""

SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1920  # 12.5 frames per second
FRAME_RATE = SAMPLE_RATE / SAMPLES_PER_FRAME
NUM_CODE_GROUPS = 16
CODEBOOK_SIZE = 2048
CODEC_VOCAB_SIZE = 3072

CODEC_SPECIAL_IDS = {
    "codec_pad_id": 2148,
    "codec_bos_id": 2149,
    "codec_eos_token_id": 2150,
    "codec_think_id": 2154,
    "codec_nothink_id": 2155,
    "codec_think_bos_id": 2156,
    "codec_think_eos_id": 2157,
}

CODEC_LANGUAGE_IDS = {
    "english": 2050,
    "german": 2053,
    "spanish": 2054,
    "chinese": 2055,
    "japanese": 2058,
    "french": 2061,
    "sichuan_dialect": 2062,
    "korean": 2064,
    "russian": 2069,
    "italian": 2070,
    "portuguese": 2071,
    "beijing_dialect": 2074,
}

# First codec-embedding row the suite assigns to fine-tuned speakers (the official recipe uses 3000).
FIRST_SPEAKER_ROW = 3000

TEXT_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|tts_pad|>", "<|tts_bos|>", "<|tts_eos|>")

# Speaker x-vector mel front end (qwen_tts.extract_speaker_embedding).
SPEAKER_MEL = dict(n_fft=1024, num_mels=128, sampling_rate=SAMPLE_RATE, hop_size=256, win_size=1024, fmin=0, fmax=12000)
