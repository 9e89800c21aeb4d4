"""Speaker x-vectors from a Qwen3-TTS Base checkpoint's ECAPA-TDNN encoder, without loading the model.

:class:`SpeakerEncoder` builds only ``Qwen3TTSSpeakerEncoder`` from the checkpoint's
``speaker_encoder_config`` and reads only the ``speaker_encoder.*`` tensors through
``safetensors.safe_open`` (a few MB out of a 3.9 GB checkpoint). Its mel front end is exactly the
one of ``Qwen3TTSForConditionalGeneration.extract_speaker_embedding`` (qwen_tts's
``mel_spectrogram``: 24 kHz, n_fft 1024, 128 mels, hop 256, fmin 0, fmax 12000), so its vectors
equal the stock model's.

    enc = SpeakerEncoder.from_checkpoint("Qwen3-TTS-12Hz-1.7B-Base")
    vec = enc.embed(load_audio("ref.wav"))            # float32 [enc_dim]

:func:`mean_embedding` averages per-clip vectors in float32 (the official recipe keeps one clip's
bf16 vector from the first shuffled batch). The speaker files they go into are
:mod:`qwen_tts_ext.prepared`'s (``save_speakers`` / ``load_speakers``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from qwen_tts_ext.checkpoint_io import resolve_checkpoint
from qwen_tts_ext.constants import SAMPLE_RATE, SPEAKER_MEL
from qwen_tts_ext.errors import UserError

PREFIX = "speaker_encoder."


def _weight_files(ckpt: Path, prefix: str) -> dict[str, list[str]]:
    """Map safetensors file -> the tensor names under ``prefix`` it holds (single file or sharded index).

    Reads the index or the safetensors header only (no tensors, no torch)."""
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        out: dict[str, list[str]] = {}
        for name, fname in weight_map.items():
            if name.startswith(prefix):
                out.setdefault(fname, []).append(name)
        return out
    single = ckpt / "model.safetensors"
    if not single.is_file():
        raise UserError(f"{ckpt} has no model.safetensors (or model.safetensors.index.json); is it a Qwen3-TTS checkpoint?")
    from qwen_tts_ext.checkpoint_io import read_safetensors_header

    names = [k for k in read_safetensors_header(single)[0] if k.startswith(prefix)]
    return {"model.safetensors": names} if names else {}


def check_speaker_encoder(path: str | os.PathLike, what: str = "speaker encoder checkpoint"
                          ) -> tuple[Path, dict, dict[str, list[str]]]:
    """``(folder, config, {weights file: encoder tensor names})`` of a checkpoint that has a speaker
    encoder, from ``config.json`` and the safetensors headers alone (cheap: run it before any work).

    Raises ``UserError`` for a checkpoint without one (CustomVoice / VoiceDesign): borrow one from a
    Base checkpoint with ``--speaker-encoder``.
    """
    ckpt = resolve_checkpoint(str(path), what=what)
    cfg_path = ckpt / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{ckpt} has no config.json; pass a Qwen3-TTS Base checkpoint folder")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{cfg_path} is not valid JSON") from None
    files = _weight_files(ckpt, PREFIX)
    model_type = cfg.get("tts_model_type", "?")
    if not files or "speaker_encoder_config" not in cfg:
        raise UserError(
            f"{ckpt} ({model_type}) has no speaker encoder; pass --speaker-encoder BASE_CKPT "
            "(a Qwen3-TTS Base checkpoint of the same size) to borrow its encoder"
        )
    return ckpt, cfg, files


class SpeakerEncoder:
    """The Base checkpoint's speaker encoder, loaded alone. Use :meth:`from_checkpoint`."""

    def __init__(self, module, device: str = "cpu", dtype=None, source: str = "", use_mkldnn: bool = False,
                 num_threads: int | None = None):
        import torch

        self.use_mkldnn = use_mkldnn
        self.num_threads = num_threads
        self.module = module.eval()
        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else next(module.parameters()).dtype
        self.source = source

    @property
    def dim(self) -> int:
        return int(self.module.fc.out_channels) if hasattr(self.module, "fc") else -1

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu", dtype=None,
                        use_mkldnn: bool = False, num_threads: int | None = None) -> "SpeakerEncoder":
        """Build the encoder from ``path``'s ``config.json`` and load only its ``speaker_encoder.*`` tensors.

        ``dtype``: a torch dtype to run in (default: the checkpoint's stored dtype, as the stock model
        loaded with that dtype would). Raises ``UserError`` for a checkpoint without an encoder
        (CustomVoice / VoiceDesign): borrow one from a Base checkpoint with ``--speaker-encoder``.

        ``use_mkldnn=False`` (default) runs CPU convolutions without oneDNN: every clip has a new
        length, and oneDNN spends far longer building kernels for a new shape than the tiny ECAPA
        convolutions take. Results agree with the stock model to ~1e-6 (float32 rounding), which is
        also how much the stock model's own result moves with the memory alignment of its weights.

        ``num_threads``: torch CPU threads while embedding (``None``: leave as is). One clip's
        convolutions are small; with 1 thread they avoid OpenMP synchronisation, which on a busy
        machine costs more than the convolutions themselves.
        """
        from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSSpeakerEncoderConfig
        from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSSpeakerEncoder
        from safetensors import safe_open

        ckpt, cfg, files = check_speaker_encoder(path)
        sec = {k: v for k, v in cfg["speaker_encoder_config"].items() if k != "model_type"}
        module = Qwen3TTSSpeakerEncoder(Qwen3TTSSpeakerEncoderConfig(**sec))
        state = {}
        for fname, names in files.items():
            with safe_open(str(ckpt / fname), framework="pt", device="cpu") as f:
                for name in names:
                    state[name[len(PREFIX):]] = f.get_tensor(name)
        stored = next(iter(state.values())).dtype
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserError(
                f"{ckpt}: speaker_encoder tensors do not match its speaker_encoder_config "
                f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
            )
        run_dtype = dtype or stored
        module = module.to(device=device, dtype=run_dtype)
        return cls(module, device=device, dtype=run_dtype, source=str(ckpt), use_mkldnn=use_mkldnn,
                   num_threads=num_threads)

    def mels(self, wav_24k: np.ndarray):
        """``[1, frames, 128]`` log-mel features exactly as ``extract_speaker_embedding`` computes them."""
        import torch
        from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

        wav = np.ascontiguousarray(wav_24k, dtype=np.float32)
        return mel_spectrogram(torch.from_numpy(wav).unsqueeze(0), **SPEAKER_MEL).transpose(1, 2)

    def embed(self, wav_24k: np.ndarray) -> np.ndarray:
        """The x-vector of one mono 24 kHz clip, as float32 ``[enc_dim]``."""
        import torch

        if wav_24k.ndim != 1:
            raise ValueError("embed() takes one mono waveform [T] at 24 kHz")
        before = torch._C._get_mkldnn_enabled()
        threads = torch.get_num_threads()
        torch._C._set_mkldnn_enabled(self.use_mkldnn or self.device.type != "cpu")
        if self.num_threads and self.num_threads != threads:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                vec = self.module(self.mels(wav_24k).to(self.device).to(self.dtype))[0]
        finally:
            torch._C._set_mkldnn_enabled(before)
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        return vec.float().cpu().numpy().astype(np.float32)

    def embed_file(self, path) -> np.ndarray:
        """Convenience: :func:`~qwen_tts_ext.prep.audio.load_audio` + :meth:`embed`."""
        from qwen_tts_ext.prep.audio import load_audio

        return self.embed(load_audio(path, SAMPLE_RATE))


def mean_embedding(vectors) -> np.ndarray:
    """Float32 mean of per-clip vectors (upcast first: bf16 means drift)."""
    stack = np.stack([np.asarray(v, dtype=np.float32) for v in vectors])
    return stack.mean(axis=0, dtype=np.float32)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors, computed in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))

