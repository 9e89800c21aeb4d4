"""``qwen-tts-ext synthesize`` / ``python scripts/synthesize.py``: speak a tagged script in one voice.

Examples::

    qwen-tts-ext synthesize --model ckpt/alice-locked --speaker alice \\
        "[Whispering] Don't wake him. [Angry] Why would you do that? [Excited] We won!"
    qwen-tts-ext synthesize --model Qwen3-TTS-12Hz-1.7B-Base --ref-audio me.wav --script-file story.txt
    qwen-tts-ext synthesize --config synth.yaml alpha=0.03 llm=Qwen3-1.7B seed=7

Exit codes: 0 ok, 2 user error (one line, no traceback), 3 audio written but at least one segment
reached its frame cap without EOS (a stop-signal failure; pass --allow-cap-hits to exit 0).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from qwen_tts_ext.config import config_to_dict, load_config
from qwen_tts_ext.errors import UserError, cli_entry

EXIT_CAP_HIT = 3
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.\-]*=")


@dataclass
class SynthesizeConfig:
    """Settings of one synthesis (YAML keys = these names; CLI flags map onto them)."""

    model: str = ""
    text: str = ""
    script_file: str = ""
    speaker: str = ""
    ref_audio: str = ""
    speakers_file: str = ""
    language: str = "auto"
    seed: int = 0
    greedy: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    alpha: float = 0.0
    llm: str = ""
    emotions: str = ""
    out: str = ""
    out_dir: str = "outputs"
    crossfade_ms: float = 40.0
    cap_margin: float = 2.0
    cap_slack_seconds: float = 3.0
    max_segment_seconds: float = 120.0
    device: str = "cpu"
    dtype: str = "auto"
    strict: bool = False
    allow_cap_hits: bool = False

    def validate(self) -> None:
        if not self.model:
            raise UserError("no model: pass --model CHECKPOINT_DIR (or model=... in the config)")
        if self.text and self.script_file:
            raise UserError("give the script either as text or with --script-file, not both")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.alpha > 0 and not self.llm:
            raise UserError(f"alpha {self.alpha} needs --llm: the Qwen3 LLM checkpoint to blend in")
        for name, what in (("ref_audio", "reference audio"), ("speakers_file", "speakers file")):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise UserError(f"{what} {value} does not exist")
        if self.crossfade_ms < 0 or self.cap_margin <= 0 or self.max_segment_seconds <= 0:
            raise UserError("crossfade_ms must be >= 0, cap_margin and max_segment_seconds > 0")

    def script(self) -> str:
        if self.script_file:
            path = Path(self.script_file)
            if not path.is_file():
                raise UserError(f"script file {path} does not exist")
            return path.read_text(encoding="utf-8")
        return self.text

    def options(self):
        from qwen_tts_ext.synthesis.engine import SynthesisOptions

        return SynthesisOptions(
            language=self.language,
            seed=self.seed,
            do_sample=False if self.greedy else None,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            cap_margin=self.cap_margin,
            cap_slack_seconds=self.cap_slack_seconds,
            max_segment_seconds=self.max_segment_seconds,
            crossfade_ms=self.crossfade_ms,
        )


def resolve_device(device: str, dtype: str) -> tuple[str, str]:
    import torch

    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qwen-tts-ext synthesize",
        description=(
            "Speak a script with inline emotion tags ([Whispering] ... [Angry] ...) in one consistent voice. "
            "Each tag starts a segment rendered with the tag's instruction (configs/emotions.yaml; unknown tags "
            "are used as free-text instructions); segments are crossfaded into one 24 kHz WAV with a JSON sidecar. "
            "Every segment's length is capped from its text, and a segment that hits the cap is reported as a "
            "stop-signal failure (exit code 3)."
        ),
        epilog="Extra KEY=VALUE arguments override the config (e.g. seed=3 cap_margin=3). Exit codes: 0 ok, 2 input "
        "error, 3 written but a segment hit its frame cap.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("args", nargs="*", metavar="TEXT|KEY=VALUE", help="the tagged script text, and/or config overrides")
    p.add_argument("--config", help="YAML file with SynthesizeConfig keys")
    g = p.add_argument_group("model and voice")
    g.add_argument("--model", help="Qwen3-TTS checkpoint folder (custom_voice or base)")
    g.add_argument("--speaker", help="speaker of a custom_voice checkpoint, or a name in --speakers-file (base)")
    g.add_argument("--ref-audio", dest="ref_audio", help="Base checkpoint: reference clip whose x-vector is the voice")
    g.add_argument("--speakers-file", dest="speakers_file", help="Base checkpoint: speakers.safetensors (name -> x-vector)")
    g.add_argument("--language", help="language name or 'auto' (default auto)")
    g.add_argument("--alpha", type=float, help="runtime Darwin blend weight of the LLM FFNs (0 = off; 0.03 typical)")
    g.add_argument("--llm", help="Qwen3 LLM checkpoint for --alpha")
    g.add_argument("--emotions", help="tag -> instruction YAML (default configs/emotions.yaml)")
    g.add_argument("--device", help="cpu, cuda:0 or auto (default cpu)")
    g.add_argument("--dtype", help="float32, bfloat16, float16 or auto (default: bfloat16 on GPU, float32 on CPU)")
    g = p.add_argument_group("text")
    g.add_argument("--text", "-t", help="the tagged script")
    g.add_argument("--script-file", dest="script_file", help="read the tagged script from a UTF-8 text file")
    g = p.add_argument_group("sampling")
    g.add_argument("--seed", type=int, help="base seed; segment i uses seed+i (default 0)")
    g.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    g.add_argument("--temperature", type=float, help="sampling temperature (default: checkpoint's generation_config)")
    g.add_argument("--top-k", dest="top_k", type=int, help="top-k (default: checkpoint's generation_config)")
    g.add_argument("--top-p", dest="top_p", type=float, help="top-p (default: checkpoint's generation_config)")
    g.add_argument("--repetition-penalty", dest="repetition_penalty", type=float, help="repetition penalty")
    g = p.add_argument_group("bounds and output")
    g.add_argument("--cap-margin", dest="cap_margin", type=float, help="frame cap = margin x expected speech + slack (default 2)")
    g.add_argument("--max-segment-seconds", dest="max_segment_seconds", type=float, help="hard cap per segment (default 120)")
    g.add_argument("--crossfade-ms", dest="crossfade_ms", type=float, help="crossfade between segments (default 40)")
    g.add_argument("--out", "-o", help="output WAV path (default: a timestamped file in --out-dir)")
    g.add_argument("--out-dir", dest="out_dir", help="folder for timestamped outputs (default outputs/)")
    g.add_argument("--strict", action="store_true", help="treat warnings (unknown tags, ignored instructions) as errors")
    g.add_argument("--allow-cap-hits", dest="allow_cap_hits", action="store_true", help="exit 0 even if a segment hit its cap")
    return p


def parse_config(argv: list[str] | None) -> SynthesizeConfig:
    ns = vars(build_parser().parse_args(argv))
    config_file = ns.pop("config", None)
    positional = ns.pop("args", [])
    overrides = [a for a in positional if _OVERRIDE.match(a)]
    text = [a for a in positional if not _OVERRIDE.match(a)]
    flags = [f"{k}={_yaml_scalar(v)}" for k, v in ns.items()]
    if text:
        if "text" in ns:
            raise UserError("give the script once: either as a positional argument or with --text")
        flags.append(f"text={_yaml_scalar(' '.join(text))}")
    return load_config(SynthesizeConfig, config_file, overrides + flags)


def _quiet_transformers() -> None:
    """Hide transformers' per-call "Setting pad_token_id ..." chatter (our own progress is printed)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def _yaml_scalar(value) -> str:
    """Quote a CLI value so the YAML override parser keeps it as given (strings stay strings)."""
    import json

    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar
    return json.dumps(value)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    script = cfg.script()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("qwen_tts_ext.synthesis").setLevel(logging.ERROR)  # this CLI prints them itself
    _quiet_transformers()
    # Parse before loading any model: a bad script fails in milliseconds.
    from qwen_tts_ext.synthesis.emotions import load_emotions
    from qwen_tts_ext.synthesis.tags import parse_script

    parse_script(script)
    emotions = load_emotions(cfg.emotions or None)

    from tqdm.auto import tqdm

    from qwen_tts_ext.synthesis.engine import Synthesizer
    from qwen_tts_ext.synthesis.joining import Joiner, crossfade_samples
    from qwen_tts_ext.synthesis.output import save_synthesis, timestamped_path
    from qwen_tts_ext.synthesis.engine import SynthesisResult

    if cfg.alpha > 0:
        from qwen_tts_ext.checkpoint_io import resolve_checkpoint

        resolve_checkpoint(cfg.llm, what="--llm")  # fail before loading the TTS model
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    t0 = time.perf_counter()
    synth = Synthesizer.load(cfg.model, device=device, dtype=dtype, emotions=emotions)
    load_s = time.perf_counter() - t0
    voice = synth.voice(speaker=cfg.speaker or None, ref_audio=cfg.ref_audio or None, speakers_file=cfg.speakers_file or None)
    options = cfg.options()
    if cfg.alpha > 0:
        print(f"blending {cfg.alpha:g} of {cfg.llm} into the talker FFNs ...", file=sys.stderr)
    blend_info = synth.blend.set(cfg.alpha, cfg.llm or None) if cfg.alpha > 0 else {}

    warnings: list[str] = []
    plan_iter = synth.generate(script, voice, options, warnings)
    if cfg.strict and warnings:
        raise UserError(f"{warnings[0]} (--strict)")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)

    n = len(synth.plan(script, options))
    segments = []
    joiner = None
    with tqdm(total=n, desc="segments", unit="seg", file=sys.stderr) as bar:
        for seg in plan_iter:
            if joiner is None:
                joiner = Joiner(crossfade_samples(options.crossfade_ms, seg.sample_rate))
            joiner.add(seg.audio)
            segments.append(seg)
            status = "EOS" if seg.stopped_by_eos else f"CAP HIT ({seg.frame_cap} frames)"
            bar.write(
                f"[{seg.index}] {('[' + seg.tag + ']') if seg.tag else '(untagged)'} {seg.seconds:.2f}s "
                f"{seg.frames} frames, {status}, RTF {seg.rtf:.2f}: {seg.text[:60]}",
                file=sys.stderr,
            )
            bar.update(1)
    result = SynthesisResult(audio=joiner.audio, sample_rate=segments[0].sample_rate, segments=segments, warnings=warnings)
    hits = result.cap_hits
    if hits:
        result.warnings.append(
            f"{len(hits)} of {len(segments)} segment(s) reached the frame cap without EOS: the stop signal failed"
        )

    out = Path(cfg.out) if cfg.out else timestamped_path(cfg.out_dir, script)
    if out.suffix.lower() != ".wav":
        raise UserError(f"output {out} must end in .wav")
    meta = dict(
        text=script,
        model=synth.describe(),
        voice=voice.describe(),
        language=options.language,
        seed=cfg.seed,
        alpha=cfg.alpha,
        llm=cfg.llm or None,
        blend={k: v for k, v in blend_info.items() if k != "alpha_per_tensor"},
        sampling=options.sampling(synth.tts.generate_defaults or {}),
        config=config_to_dict(cfg),
        load_seconds=round(load_s, 3),
    )
    wav, side = save_synthesis(result, out, meta)
    total_gen = sum(s.gen_seconds for s in segments)
    print(
        f"wrote {wav} ({result.seconds:.2f} s, {len(segments)} segment(s), RTF {total_gen / max(result.seconds, 1e-9):.2f}) "
        f"and {side.name}"
    )
    if hits:
        print(
            f"warning: {len(hits)} segment(s) hit the frame cap without EOS (stop-signal failure): "
            + ", ".join(f"#{s.index}" for s in hits),
            file=sys.stderr,
        )
        return 0 if cfg.allow_cap_hits else EXIT_CAP_HIT
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
