"""What ``qwen-tts-ext synthesize`` runs: check everything, then speak a tagged script into a WAV + sidecar.

Every check that needs no weights comes first, so a mistake costs milliseconds, not a model load and
seconds of synthesis: the script parses; the model folder is a Qwen3-TTS base/custom_voice checkpoint
(from its ``config.json``); the device exists; the output is a ``.wav`` we may write (never a user's
file); the voice exists (speakers from ``config.json``, names in a speakers file); the language is
supported; an ``--llm`` for ``--alpha`` is a Qwen3 LLM whose FFN shapes fit the talker's (from the
safetensors headers); ``--strict`` warnings. Only then is the model loaded.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from qwen_tts_ext.checkpoint_io import read_config, require_llm_checkpoint, require_tts_checkpoint
from qwen_tts_ext.command import emit
from qwen_tts_ext.config import config_to_dict
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.synthesis.config import SPEAKING_TYPES, SynthesizeConfig
from qwen_tts_ext.synthesis.engine import Synthesizer, Voice, load_audio_24k

EXIT_CAP_HIT = 3


def quiet_transformers() -> None:
    """Hide transformers' per-call "Setting pad_token_id ..." chatter (our own progress is printed)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


class CheckpointFacts(Synthesizer):
    """A ``Synthesizer`` that knows only a checkpoint's ``config.json``.

    It plans a script, resolves a voice and checks languages and instructions with the very code of
    the loaded one (speakers from ``talker_config.spk_id``, languages from ``codec_language_id``), so
    every such mistake is found before any weights load. It cannot generate.
    """

    def __init__(self, folder: str | Path, emotions, config: dict | None = None):
        self.config = config if config is not None else read_config(folder)
        self.model_path = str(folder)
        self.emotions = emotions
        self.tts = self.blend = None
        self._warned: set[str] = set()
        talker = self.config.get("talker_config") or {}
        self._talker = talker
        # what Synthesizer._voice_from_file reads from a loaded model
        self.model = SimpleNamespace(config=SimpleNamespace(talker_config=SimpleNamespace(
            hidden_size=int(talker.get("hidden_size", 0)))))

    @property
    def model_type(self) -> str:
        return str(self.config.get("tts_model_type", "base"))

    @property
    def model_size(self) -> str:
        return str(self.config.get("tts_model_size", ""))

    @property
    def speakers(self) -> list[str]:
        return sorted(str(s).lower() for s in (self._talker.get("spk_id") or {}))

    @property
    def languages(self) -> list[str]:
        langs = [str(k) for k in (self._talker.get("codec_language_id") or {}) if "dialect" not in str(k)]
        return sorted(s.lower() for s in ["auto", *langs])

    def voice(self, speaker=None, ref_audio=None, speakers_file=None) -> Voice | None:
        """Check the voice as ``Synthesizer.voice`` would; a reference clip is only read (its x-vector
        needs the model), so None is returned for it."""
        if self.model_type == "base" and ref_audio is not None:
            load_audio_24k(ref_audio)
            return None
        try:
            return super().voice(speaker=speaker, ref_audio=ref_audio, speakers_file=speakers_file)
        except UserError:
            raise
        except Exception as exc:  # safetensors' own errors for a file that is not a speakers file
            file = speakers_file or Path(self.model_path) / "speakers.safetensors"
            raise UserError(f"cannot read speakers file {file} ({type(exc).__name__}); pass the "
                            "speakers.safetensors written by `qwen-tts-ext prepare`") from None

    def generate_segment(self, *args, **kwargs):  # pragma: no cover - a programming error, not a user one
        raise TypeError("CheckpointFacts cannot generate; load a Synthesizer")


def check_blend(model_dir: Path, llm: str, alpha: float):
    """The ``--llm`` folder for a runtime blend of ``alpha``, checked against the model from config.json and
    the safetensors headers alone (the ``blend`` command's plan and checks); returns ``(llm_dir, plan)``."""
    from qwen_tts_ext.blend.pipeline import tensor_table
    from qwen_tts_ext.blend.plan import make_plan
    from qwen_tts_ext.checkpoint_io import LazyCheckpoint

    llm_dir = require_llm_checkpoint(llm, what="--llm")
    with LazyCheckpoint(model_dir) as tts, LazyCheckpoint(llm_dir) as lm:
        plan = make_plan(tts.config(), tensor_table(tts), lm.config(), tensor_table(lm), {"alpha": alpha})
    return llm_dir, plan


def preflight(cfg: SynthesizeConfig) -> dict[str, Any]:
    """Every check that needs no weights, in the order a user would fix them; returns what ``run`` needs."""
    from qwen_tts_ext.devices import resolve_device
    from qwen_tts_ext.synthesis.emotions import load_emotions
    from qwen_tts_ext.synthesis.output import check_synthesis_output, timestamped_path
    from qwen_tts_ext.synthesis.tags import parse_script

    cfg.check()
    script = cfg.script()
    parse_script(script)
    emotions = load_emotions(cfg.emotions or None)
    model_dir = require_tts_checkpoint(cfg.runtime.model, what="--model", types=SPEAKING_TYPES)
    device, dtype = resolve_device(cfg.runtime.device, cfg.runtime.dtype)
    if cfg.out:
        wav, side = check_synthesis_output(cfg.out, overwrite=cfg.overwrite, flag="--out")
    else:
        out_dir = Path(cfg.out_dir).expanduser()
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"--out-dir {out_dir} is a file; choose a folder (the file is left as it is)")
        wav, side = check_synthesis_output(timestamped_path(out_dir, script), flag="--out-dir")
    facts = CheckpointFacts(model_dir, emotions)
    v = cfg.voice
    facts.voice(speaker=v.speaker or None, ref_audio=v.ref_audio or None, speakers_file=v.speakers_file or None)
    warnings = facts.check(facts.plan(script, cfg.synthesis), None, cfg.synthesis)
    llm_dir = None
    if cfg.alpha > 0:
        llm_dir, blend_plan = check_blend(model_dir, cfg.llm, cfg.alpha)
        warnings += blend_plan.warnings
    if cfg.strict and warnings:
        raise UserError(f"{warnings[0]} (--strict)")
    return dict(script=script, emotions=emotions, model_dir=model_dir, device=device, dtype=dtype, wav=wav,
                warnings=warnings, llm_dir=llm_dir, facts=facts)


def run(cfg: SynthesizeConfig) -> int:
    """Check, load, speak, write; return 0, or ``EXIT_CAP_HIT`` when a segment hit its frame cap."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("qwen_tts_ext.synthesis").setLevel(logging.ERROR)  # this command prints them itself
    pre = preflight(cfg)
    for w in pre["warnings"]:
        print(f"warning: {w}", file=sys.stderr)

    # ---------------------------------------------------------------- everything checked: load and speak
    from tqdm.auto import tqdm

    from qwen_tts_ext.synthesis.engine import SynthesisResult
    from qwen_tts_ext.synthesis.joining import Joiner, crossfade_samples
    from qwen_tts_ext.synthesis.output import save_synthesis

    quiet_transformers()
    script, options = pre["script"], cfg.synthesis
    t0 = time.perf_counter()
    synth = Synthesizer.load(cfg.runtime.model, device=pre["device"], dtype=pre["dtype"], emotions=pre["emotions"])
    load_s = time.perf_counter() - t0
    v = cfg.voice
    voice = synth.voice(speaker=v.speaker or None, ref_audio=v.ref_audio or None, speakers_file=v.speakers_file or None)
    blend_info: dict = {}
    if cfg.alpha > 0:
        print(f"blending {cfg.alpha:g} of {cfg.llm} into the talker FFNs ...", file=sys.stderr)
        blend_info = synth.blend.set(cfg.alpha, pre["llm_dir"])

    warnings: list[str] = []
    segments_iter = synth.generate(script, voice, options, warnings)
    n = len(synth.plan(script, options))
    segments, joiner = [], None
    with tqdm(total=n, desc="segments", unit="seg", file=sys.stderr) as bar:
        for seg in segments_iter:
            if joiner is None:
                joiner = Joiner(crossfade_samples(options.crossfade_ms, seg.sample_rate))
            joiner.add(seg.audio)
            segments.append(seg)
            status = "EOS" if seg.stopped_by_eos else f"CAP HIT ({seg.frame_cap} frames)"
            bar.write(f"[{seg.index}] {('[' + seg.tag + ']') if seg.tag else '(untagged)'} {seg.seconds:.2f}s "
                      f"{seg.frames} frames, {status}, RTF {seg.rtf:.2f}: {seg.text[:60]}", file=sys.stderr)
            bar.update(1)
    result = SynthesisResult(audio=joiner.audio, sample_rate=segments[0].sample_rate, segments=segments,
                             warnings=warnings)
    hits = result.cap_hits
    if hits:
        result.warnings.append(
            f"{len(hits)} of {len(segments)} segment(s) reached the frame cap without EOS: the stop signal failed")
    meta = dict(
        text=script,
        model=synth.describe(),
        voice=voice.describe(),
        language=options.language,
        seed=options.seed,
        alpha=cfg.alpha,
        llm=cfg.llm or None,
        blend={k: val for k, val in blend_info.items() if k != "alpha_per_tensor"},
        sampling=options.sampling(synth.tts.generate_defaults or {}),
        config=config_to_dict(cfg),
        load_seconds=round(load_s, 3),
    )
    wav, side = save_synthesis(result, pre["wav"], meta, overwrite=cfg.overwrite, command="synthesize")
    total_gen = sum(s.gen_seconds for s in segments)
    emit(f"wrote {wav} ({result.seconds:.2f} s, {len(segments)} segment(s), "
         f"RTF {total_gen / max(result.seconds, 1e-9):.2f}) and {side.name}")
    if hits:
        print(f"warning: {len(hits)} segment(s) hit the frame cap without EOS (stop-signal failure): "
              + ", ".join(f"#{s.index}" for s in hits), file=sys.stderr)
        return 0 if cfg.allow_cap_hits else EXIT_CAP_HIT
    return 0
