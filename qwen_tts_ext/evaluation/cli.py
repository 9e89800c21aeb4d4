"""``python scripts/evaluate.py``: the Darwin alpha sweep (stop rate, duration, similarity, drift, RTF).

Examples::

    python scripts/evaluate.py --model ckpt/alice-locked --speaker alice --llm Qwen3-1.7B \\
        --speaker-encoder Qwen3-TTS-12Hz-1.7B-Base --ref-audio alice_ref.wav
    python scripts/evaluate.py --model Qwen3-TTS-12Hz-1.7B-Base --ref-audio me.wav --llm Qwen3-1.7B \\
        --alphas 0,0.02,0.04 --sentences-file sentences.txt --asr whisper-small

Writes ``sweep.md``, ``sweep.json`` and ``sweep.png`` into ``--out-dir`` (default
``outputs/alpha-sweep-<timestamp>``) and prints the recommended alpha.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from qwen_tts_ext.config import config_to_dict, load_config
from qwen_tts_ext.errors import UserError, cli_entry
from qwen_tts_ext.evaluation.sweep import DEFAULT_ALPHAS, DEFAULT_SCRIPT, DEFAULT_SENTENCES


@dataclass
class EvaluateConfig:
    """Settings of an alpha sweep (YAML keys = these names; CLI flags map onto them)."""

    model: str = ""
    llm: str = ""
    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    sentences: list[str] = field(default_factory=list)
    sentences_file: str = ""
    script: str = DEFAULT_SCRIPT
    speaker: str = ""
    ref_audio: str = ""
    speakers_file: str = ""
    speaker_encoder: str = ""
    language: str = "auto"
    seed: int = 0
    greedy: bool = False
    cap_margin: float = 2.0
    cap_slack_seconds: float = 3.0
    max_segment_seconds: float = 120.0
    stop_tolerance: float = 0.05
    similarity_tolerance: float = 0.05
    cer_tolerance: float = 0.05
    min_stop_rate: float = 0.8
    asr: str = ""
    out_dir: str = ""
    save_audio: bool = False
    device: str = "cpu"
    dtype: str = "auto"

    def validate(self) -> None:
        if not self.model:
            raise UserError("no model: pass --model CHECKPOINT_DIR")
        if not self.alphas:
            raise UserError("no alphas to sweep (e.g. --alphas 0,0.01,0.03,0.05,0.1)")
        bad = [a for a in self.alphas if not 0.0 <= a <= 1.0]
        if bad:
            raise UserError(f"alphas must be in [0, 1], got {bad}")
        if any(a > 0 for a in self.alphas) and not self.llm:
            raise UserError("alphas above 0 need --llm: the Qwen3 LLM checkpoint whose FFNs are blended in")
        for name in ("stop_tolerance", "similarity_tolerance", "cer_tolerance"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0")
        for name, what in (("ref_audio", "reference audio"), ("speakers_file", "speakers file"),
                           ("speaker_encoder", "speaker-encoder checkpoint")):
            value = getattr(self, name)
            if value and not Path(value).exists():
                raise UserError(f"{what} {value} does not exist")

    def test_sentences(self) -> list[str]:
        if self.sentences_file:
            path = Path(self.sentences_file)
            if not path.is_file():
                raise UserError(f"sentences file {path} does not exist")
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            sents = [ln for ln in lines if ln and not ln.startswith("#")]
            if not sents:
                raise UserError(f"sentences file {path} has no sentences (one per line)")
            return sents
        return list(self.sentences) or list(DEFAULT_SENTENCES)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python scripts/evaluate.py",
        description=(
            "Darwin alpha sweep: for each alpha, blend the LLM's FFNs into the loaded TTS model in memory, synthesize "
            "test sentences and a tagged script, and measure the share of utterances that stop by EOS before the "
            "frame cap, mean duration relative to alpha 0, speaker similarity, identity drift across segments and the "
            "real-time factor (plus CER with --asr). Writes sweep.md / sweep.json / sweep.png and recommends the "
            "largest alpha whose stop rate and similarity stay within tolerance of alpha 0."
        ),
        epilog="Extra KEY=VALUE arguments override the config (e.g. stop_tolerance=0.1).",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", help="YAML file with EvaluateConfig keys")
    p.add_argument("--model", help="Qwen3-TTS checkpoint folder (custom_voice or base)")
    p.add_argument("--llm", help="Qwen3 LLM checkpoint blended in for alphas > 0")
    p.add_argument("--alphas", help="comma-separated alphas (default 0,0.01,0.03,0.05,0.1; 0 is always added)")
    p.add_argument("--sentences-file", dest="sentences_file", help="test sentences, one per line (default: 6 built-in)")
    p.add_argument("--script", help="tagged script for the identity-drift measurement")
    p.add_argument("--speaker", help="speaker (custom_voice) or name in --speakers-file (base)")
    p.add_argument("--ref-audio", dest="ref_audio", help="reference clip: the voice for Base checkpoints and the similarity reference")
    p.add_argument("--speakers-file", dest="speakers_file", help="speakers.safetensors from data prep (name -> x-vector)")
    p.add_argument("--speaker-encoder", dest="speaker_encoder",
                   help="Base checkpoint whose speaker encoder measures similarity (default: --model if it is a Base checkpoint)")
    p.add_argument("--language", help="language or auto")
    p.add_argument("--seed", type=int, help="base seed (sentence i uses seed + 1000*i at every alpha)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding")
    p.add_argument("--asr", help="local ASR model folder (transformers) to add character error rate; skipped if absent")
    p.add_argument("--stop-tolerance", dest="stop_tolerance", type=float, help="allowed drop of the stop rate (default 0.05)")
    p.add_argument("--similarity-tolerance", dest="similarity_tolerance", type=float, help="allowed drop of similarity (default 0.05)")
    p.add_argument("--min-stop-rate", dest="min_stop_rate", type=float, help="every alpha must stop by EOS at least this often (default 0.8)")
    p.add_argument("--out-dir", dest="out_dir", help="report folder (default outputs/alpha-sweep-<timestamp>)")
    p.add_argument("--save-audio", dest="save_audio", action="store_true", help="also keep every generated WAV in <out-dir>/audio")
    p.add_argument("--device", help="cpu, cuda:0 or auto")
    p.add_argument("--dtype", help="float32, bfloat16, float16 or auto")
    return p


def parse_config(argv: list[str] | None) -> EvaluateConfig:
    import json

    ns = vars(build_parser().parse_args(argv))
    config_file = ns.pop("config", None)
    overrides = ns.pop("overrides", [])
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"unexpected argument {bad[0]!r}: overrides look like key=value")
    if "alphas" in ns:
        try:
            ns["alphas"] = [float(x) for x in str(ns["alphas"]).split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--alphas must be comma-separated numbers, got {ns['alphas']!r}") from None
    flags = [f"{k}={json.dumps(v)}" for k, v in ns.items()]
    return load_config(EvaluateConfig, config_file, overrides + flags)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    sentences = cfg.test_sentences()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("qwen_tts_ext.synthesis").setLevel(logging.ERROR)
    from qwen_tts_ext.synthesis.cli import _quiet_transformers, resolve_device

    _quiet_transformers()
    if cfg.script:
        from qwen_tts_ext.synthesis.tags import parse_script

        parse_script(cfg.script)
    if cfg.llm and any(a > 0 for a in cfg.alphas):
        from qwen_tts_ext.checkpoint_io import resolve_checkpoint

        resolve_checkpoint(cfg.llm, what="--llm")  # fail before loading the model, not after alpha 0

    import tempfile

    from qwen_tts_ext.evaluation.recommend import Tolerances, recommend_alpha
    from qwen_tts_ext.evaluation.report import write_report
    from qwen_tts_ext.evaluation.sweep import Embedder, asr_transcriber, run_sweep
    from qwen_tts_ext.synthesis.engine import SynthesisOptions, Synthesizer

    device, dtype = resolve_device(cfg.device, cfg.dtype)
    synth = Synthesizer.load(cfg.model, device=device, dtype=dtype)
    voice = synth.voice(speaker=cfg.speaker or None,
                        ref_audio=(cfg.ref_audio or None) if synth.model_type == "base" else None,
                        speakers_file=cfg.speakers_file or None)
    options = SynthesisOptions(language=cfg.language, seed=cfg.seed, do_sample=False if cfg.greedy else None,
                               cap_margin=cfg.cap_margin, cap_slack_seconds=cfg.cap_slack_seconds,
                               max_segment_seconds=cfg.max_segment_seconds)
    notes: list[str] = []

    # Similarity: the speaker encoder of a Base checkpoint (the model itself, or --speaker-encoder).
    enc_path = cfg.speaker_encoder or (cfg.model if synth.model_type == "base" else "")
    embedder = Embedder.from_checkpoint(enc_path) if enc_path else None
    if embedder is None:
        notes.append("no speaker encoder (custom_voice model without --speaker-encoder BASE_CKPT): similarity and drift not measured")
    reference, ref_desc = None, None
    if embedder is not None:
        if cfg.ref_audio:
            from qwen_tts_ext.synthesis.engine import load_audio_24k

            reference = embedder(load_audio_24k(cfg.ref_audio), 24000)
            ref_desc = f"reference clip {cfg.ref_audio}"
        elif voice.kind == "xvector" and voice.xvector is not None and voice.xvector.numel() == embedder.encoder.dim:
            reference = voice.xvector.numpy()
            ref_desc = f"x-vector of {voice.name} ({voice.source})"
        elif cfg.speakers_file and voice.kind == "speaker":
            from qwen_tts_ext.prep.speakers import load_speakers

            table = {k.lower(): v for k, v in load_speakers(cfg.speakers_file).items()}
            if voice.speaker in table:
                reference = table[voice.speaker]
                ref_desc = f"x-vector of {voice.speaker} in {cfg.speakers_file}"
    transcribe, asr_note = asr_transcriber(cfg.asr or None, device="cpu" if device == "cpu" else device)
    if asr_note:
        notes.append(asr_note)
        print(f"warning: {asr_note}", file=sys.stderr)

    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("outputs") / f"alpha-sweep-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    with tempfile.TemporaryDirectory(prefix="sweep-audio-") as audio_tmp:
        rows, default_desc = run_sweep(
            synth, voice, options, alphas=cfg.alphas, llm=cfg.llm or None, sentences=sentences,
            script=cfg.script or None, embedder=embedder, reference=reference, transcribe=transcribe,
            audio_dir=audio_tmp if cfg.save_audio else None,
        )
        rec = recommend_alpha([r.as_dict() for r in rows],
                              Tolerances(cfg.stop_tolerance, cfg.similarity_tolerance, cfg.cer_tolerance,
                                         cfg.min_stop_rate))
        rec.notes = notes + rec.notes
        report = {
            "settings": {
                "model": cfg.model,
                "llm": cfg.llm or None,
                "voice": voice.describe(),
                "num_sentences": len(sentences),
                "num_script_segments": len(synth.plan(cfg.script, options)) if cfg.script else 0,
                "seed": cfg.seed,
                "similarity_reference": ref_desc or default_desc,
                "tolerances": {"stop": cfg.stop_tolerance, "similarity": cfg.similarity_tolerance, "cer": cfg.cer_tolerance,
                               "min_stop_rate": cfg.min_stop_rate},
                "asr": bool(transcribe),
                "config": config_to_dict(cfg),
            },
            "rows": [r.as_dict() for r in rows],
            "recommendation": rec.as_dict(),
        }
        paths = write_report(report, out_dir, audio_dir=audio_tmp if cfg.save_audio else None)

    from qwen_tts_ext.evaluation.report import markdown_table

    print(markdown_table(report["rows"], rec.alpha if rec.status == "ok" else None, rec.verdicts))
    for note in rec.notes:
        print(f"note: {note}")
    if rec.status == "baseline-unstable":
        print("recommended alpha: none (0): alpha 0 already fails to stop; fix the checkpoint first")
    else:
        print(f"recommended alpha: {rec.alpha:g}")
    print(f"wrote {paths['md']}, {paths['json'].name}, {paths['png'].name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
