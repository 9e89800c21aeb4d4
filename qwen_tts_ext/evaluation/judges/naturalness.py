"""Naturalness / quality: DistillMOS and DNSMOS (P.835 overall, signal, background), higher is better.

``mos_distill`` (judge ``distillmos``): DistillMOS v7 (``distill_mos_v7.pt`` inside the MIT wheel), a
CNN+transformer distilled from XLS-R SQA, predicting a 1-5 MOS from 16 kHz audio. Run exactly as the
package runs it: each clip is padded to 7.68 s, longer clips are averaged over 7.68 s windows 1 s apart.

``dnsmos_ovrl`` / ``dnsmos_sig`` / ``dnsmos_bak`` (judge ``dnsmos``): Microsoft's DNSMOS P.835 ONNX model
(``sig_bak_ovr.onnx`` inside speechmos), overall quality, speech signal distortion and background noise
(1-5). Run exactly as ``speechmos.dnsmos.run`` runs it (clip tiled to >= 9.01 s, 9.01 s windows 1 s apart,
the same polynomial calibration; equal to it to 1e-6) except that the P.808 model, whose output is not
reported, is not run, identical windows of a tiled short clip are scored once, and ONNX Runtime gets
``threads`` threads instead of every core. Like the reference (Microsoft's dnsmos_local.py, which
speechmos copies), windows starting at 7-23 s are skipped (its float end index falls one sample short),
so a clip of 16-32 s is judged on its first 16 s. Cost: ~0.35 s of CPU per window, 1-7 windows per
clip under 16 s (1 for 2.3-2.8 s or 9-10 s clips, 3 for a 3.2 s clip, 7 for a 4.4 s or 8.9 s clip).

Measured on espeak-ng English (18 clips: 6 sentences x 3 voices, 2.5-3.7 s; noise added at 22.05 kHz,
"lower by" = the smallest per-clip drop from the clean clip):

============  ===========  ===================  ===================  ===================  ================
metric        clean        + white noise 30 dB  + white noise 0 dB   + white noise -5 dB  hard-clipped x100
============  ===========  ===================  ===================  ===================  ================
mos_distill   2.0-3.3      2.6-3.5: RISES       1.25-2.2             1.3-1.55             1.2-2.1
              mean 2.56    (mean +0.34)         lower by >= 0.33     lower by >= 0.67     lower by >= 0.34
dnsmos_ovrl   2.1-3.15     2.2-3.2 (mean +0.0)  1.1-1.75             1.1-1.6              1.35-2.1
              mean 2.81                         lower by >= 0.52     lower by >= 0.85     lower by >= 0.59
dnsmos_sig    2.8-3.45     2.95-3.6             1.6-3.3              1.2-3.1              1.7-3.0
dnsmos_bak    2.8-4.1      2.8-3.8              1.0-1.6              1.1-1.5              1.7-3.1
============  ===========  ===================  ===================  ===================  ================

Both are deterministic (repeat spread 0); the spread is between sentences of one voice: DistillMOS std
0.28-0.42, DNSMOS ovrl std 0.22-0.32. Caution, DistillMOS on clean synthetic speech: mild noise RAISES
it (30 dB SNR: +0.34 on average, up to +0.7; 10 dB: +0.07, up to +0.6); it falls for every clip only
from ~0 dB SNR. DNSMOS ovrl does not move at 30 dB and falls by 0.74 at 10 dB; noise shows mostly in
dnsmos_bak, distortion (clipping) in dnsmos_sig. Read both as means over >= 10 clips; a change of a mean
under ~0.15 is sentence noise. Clips under 0.25 s score None.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os

import numpy as np

from qwen_tts_ext.evaluation.judges.base import Clip, Judge, Metric, resample, torch_threads

SAMPLE_RATE = 16000
MIN_SECONDS = 0.25


@functools.cache
def _distillmos():
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "weights loaded from ..." (stdout is for results)
        from distillmos import ConvTransformerSQAModel

        model = ConvTransformerSQAModel()  # distill_mos_v7.pt from the wheel; never touches the hub
    return model.eval()


class DistillMos(Judge):
    name = "distillmos"
    metrics = (Metric("mos_distill", "higher", "naturalness MOS predicted by DistillMOS (1-5)",
                      "espeak-ng 2.0-3.3 (mean 2.6); + white noise at 0 dB SNR 1.25-2.2"),)
    package = "distillmos"
    requires = ("distillmos", "xls_r_sqa")
    install = "pip install distillmos==0.9.1"
    skips = "MOS"

    def __init__(self, threads: int | None = 1):
        self.threads = threads

    def load(self) -> None:
        _distillmos()

    def score(self, clips):
        with torch_threads(self.threads):
            return super().score(clips)

    def _score(self, clip: Clip) -> dict[str, float | None]:
        import torch

        wav = resample(clip.audio, clip.sample_rate, SAMPLE_RATE)
        if len(wav) < MIN_SECONDS * SAMPLE_RATE:
            return {"mos_distill": None}
        with torch.inference_mode():
            mos = _distillmos()(torch.from_numpy(np.ascontiguousarray(wav))[None])
        return {"mos_distill": float(mos.reshape(-1)[0])}


WINDOW_SECONDS = 9.01  # speechmos.dnsmos.INPUT_LENGTH
BATCH = 1  # windows per ONNX call: batching saves no CPU time and the arena then keeps ~800 MB (vs ~190 MB)


@functools.cache
def _dnsmos_session(threads: int):
    import onnxruntime as ort
    import speechmos

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    path = os.path.join(os.path.dirname(speechmos.__file__), "dnsmos_models", "sig_bak_ovr.onnx")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _calibrate(sig: float, bak: float, ovr: float) -> tuple[float, float, float]:
    """speechmos's own polynomial mapping (non-personalized) from raw outputs to MOS."""
    from speechmos.dnsmos import DNSMOS

    cal = DNSMOS.__new__(DNSMOS)  # get_polyfit_val uses no instance state; skip the sessions __init__ builds
    return tuple(float(v) for v in cal.get_polyfit_val(sig, bak, ovr, False))


def dnsmos_windows(wav16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(windows [n, 144160], counts [n])``: the windows ``speechmos.dnsmos`` cuts (clip tiled to >= 9.01 s,
    hop 1 s), each distinct window once with how many of speechmos's windows equal it.

    A clip shorter than 9.01 s is tiled, so windows whose starts differ by a multiple of its length are
    the same samples (a 1 s clip gives 7 identical windows): scoring each once and weighting by its
    count gives speechmos's mean exactly, for a fraction of the time.
    """
    length = int(WINDOW_SECONDS * SAMPLE_RATE)
    period = len(wav16)
    audio = np.asarray(wav16, dtype=np.float32)
    while len(audio) < length:
        audio = np.append(audio, audio)
    tiled = len(audio) > period
    hops = int(np.floor(len(audio) / SAMPLE_RATE) - WINDOW_SECONDS) + 1
    counts: dict[int, int] = {}
    first: dict[int, int] = {}
    for i in range(hops):
        start = i * SAMPLE_RATE
        # speechmos's own arithmetic: (i + 9.01) * 16000 rounds down to one sample short from i = 7 on, and
        # it skips such windows; so do we, so that the values equal the package's
        if int((i + WINDOW_SECONDS) * SAMPLE_RATE) - start < length or start + length > len(audio):
            continue
        key = start % period if tiled else start
        first.setdefault(key, start)
        counts[key] = counts.get(key, 0) + 1
    windows = np.stack([audio[first[k]:first[k] + length] for k in counts]).astype(np.float32)
    return windows, np.array([counts[k] for k in counts], dtype=np.float64)


class Dnsmos(Judge):
    name = "dnsmos"
    metrics = (
        Metric("dnsmos_ovrl", "higher", "DNSMOS P.835 overall quality (1-5)",
               "espeak-ng 2.1-3.15 (mean 2.8); + white noise at 0 dB SNR 1.1-1.75"),
        Metric("dnsmos_sig", "higher", "DNSMOS P.835 speech signal quality (distortion; 1-5)", "espeak-ng 2.8-3.45; hard-clipped 1.7-3.0"),
        Metric("dnsmos_bak", "higher", "DNSMOS P.835 background quality (noise; 1-5)",
               "espeak-ng 2.8-4.1; + white noise at 0 dB SNR 1.0-1.6"),
    )
    package = "speechmos"
    requires = ("speechmos", "onnxruntime", "librosa")
    install = "pip install speechmos==0.0.1.1"
    skips = "DNSMOS"

    def __init__(self, threads: int | None = 1):
        self.threads = threads or 1

    def load(self) -> None:
        _dnsmos_session(self.threads)

    def _score(self, clip: Clip) -> dict[str, float | None]:
        wav = resample(clip.audio, clip.sample_rate, SAMPLE_RATE)
        if len(wav) < MIN_SECONDS * SAMPLE_RATE:
            return {m.name: None for m in self.metrics}
        windows, counts = dnsmos_windows(np.clip(wav, -1.0, 1.0))
        session = _dnsmos_session(self.threads)
        raw = np.concatenate([session.run(None, {"input_1": windows[i:i + BATCH]})[0]
                              for i in range(0, len(windows), BATCH)])
        cal = np.array([_calibrate(*r) for r in raw])  # per window, then the mean (as speechmos averages)
        sig, bak, ovr = (cal * counts[:, None]).sum(axis=0) / counts.sum()
        return {"dnsmos_ovrl": ovr, "dnsmos_sig": sig, "dnsmos_bak": bak}
