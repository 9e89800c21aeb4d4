"""Listening to a model while it trains: synthesize with a speaker *vector* (no config entry needed).

Used at eval time to log audio per speaker. It goes through the stock ``generate()`` with an
x-vector prompt, which places the vector at the speaker slot exactly as training does, in
non-streaming mode (the layout SFT trains and ``generate_custom_voice`` uses).
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def synthesize_with_vector(model, processor, text: str, vector: torch.Tensor, *, language: str = "auto",
                           max_frames: int = 200, instruct: str | None = None, **gen_kwargs):
    """Returns (wav float32, sample_rate, stopped_by_eos): at most ``max_frames`` frames; a clip that fills them
    did not stop by EOS."""
    def ids(s: str) -> torch.Tensor:
        return processor(text=s, return_tensors="pt")["input_ids"].to(model.device)

    input_ids = [ids(f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n")]
    instruct_ids = [ids(f"<|im_start|>user\n{instruct}<|im_end|>\n")] if instruct else [None]
    prompt = {"ref_spk_embedding": [vector.to(model.device)], "x_vector_only_mode": [True], "icl_mode": [False],
              "ref_code": [None]}
    # the talker's k-th generated token is decoded only after step k+1, so N new tokens give at most N-1 frames:
    # ask for max_frames + 1 and call a clip that fills max_frames "not stopped by EOS" (as synthesis/engine.py does)
    codes, _ = model.generate(input_ids=input_ids, instruct_ids=instruct_ids, voice_clone_prompt=prompt,
                              languages=[language], non_streaming_mode=True, max_new_tokens=max_frames + 1,
                              **gen_kwargs)
    stopped = int(codes[0].shape[0]) < max_frames
    if codes[0].shape[0] == 0:
        return np.zeros(1920, dtype=np.float32), 24000, stopped
    wavs, sr = model.speech_tokenizer.decode([{"audio_codes": codes[0]}])
    return np.asarray(wavs[0], dtype=np.float32), int(sr), stopped


def mel_image(wav: np.ndarray, sr: int) -> np.ndarray:
    """An RGB uint8 image [H, W, 3] of the log-mel spectrogram, for trackers."""
    import librosa
    import matplotlib

    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=np.asarray(wav, dtype=np.float32), sr=sr, n_mels=80), ref=np.max)
    norm = (mel - mel.min()) / max(1e-9, float(mel.max() - mel.min()))
    rgb = matplotlib.colormaps["magma"](norm[::-1])[..., :3]
    return (rgb * 255).astype(np.uint8)
