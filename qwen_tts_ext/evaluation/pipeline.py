"""The Darwin alpha sweep, end to end (what ``qwen-tts-ext evaluate`` runs).

1. :func:`preflight` checks everything that can be checked without loading a model, so a mistake
   costs seconds, not minutes of alpha-0 synthesis: the required settings, the test sentences and the
   script's tags, what each folder is (from ``config.json``: ``--model`` a Qwen3-TTS custom_voice or
   base checkpoint, ``--llm`` an LLM, ``--speaker-encoder`` a Base checkpoint, ``--asr`` a model
   folder), the voice (speaker names, speakers file, language), the report folder (refused unless new,
   empty, or this command's previous report with ``--overwrite``), the device, and that the LLM can be
   blended into the talker (the blend's own plan, from the safetensors headers alone);
2. :func:`run` loads the model and sweeps the alphas, building the report in a temp folder beside
   ``--out-dir`` that is renamed into place when complete; the table, the recommendation and the
   paths go to stdout, logs and progress to stderr.
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from qwen_tts_ext.command import emit
from qwen_tts_ext.config import config_to_dict
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.evaluation.config import EvaluateConfig
from qwen_tts_ext.evaluation.report import COMMAND, LEGACY


@dataclass
class Ready:
    """What :func:`preflight` found: checked inputs, the report folder and the device."""

    model_dir: Path
    model_type: str  # "base" or "custom_voice"
    llm_dir: Path | None
    encoder_dir: Path | None  # the speaker encoder's checkpoint (None: similarity not measured)
    asr_dir: Path | None
    out: Path
    device: str
    dtype: str
    sentences: list[str]
    judges: list[str] | None = None  # the offline judges to load ([]: none)


def default_out_dir() -> Path:
    return Path("outputs") / f"alpha-sweep-{_dt.datetime.now():%Y%m%d-%H%M%S}"


def preflight(cfg: EvaluateConfig) -> Ready:
    """Every check that needs no model loaded; a ``UserError`` on the first kind of mistake found."""
    from qwen_tts_ext.checkpoint_io import read_config, require_llm_checkpoint, require_tts_checkpoint
    from qwen_tts_ext.devices import resolve_device
    from qwen_tts_ext.outputs import check_output_dir

    cfg.check()
    sentences = cfg.test_sentences()
    model_dir = require_tts_checkpoint(cfg.runtime.model, what="--model", types=("base", "custom_voice"))
    model_config = read_config(model_dir)
    model_type = str(model_config.get("tts_model_type", "base"))
    llm_dir = require_llm_checkpoint(cfg.llm, what="--llm") if cfg.llm else None
    encoder_dir = None
    if cfg.speaker_encoder:
        encoder_dir = require_tts_checkpoint(cfg.speaker_encoder, what="--speaker-encoder", types=("base",))
    elif model_type == "base":
        encoder_dir = model_dir
    asr_dir = check_asr_dir(cfg.asr) if cfg.asr else None
    judges = check_judges(cfg, encoder_dir)
    check_voice(cfg, model_dir, model_config)

    inputs = {"--model": model_dir}
    for flag, path in (("--llm", llm_dir), ("--speaker-encoder", cfg.speaker_encoder and encoder_dir),
                       ("--asr", asr_dir)):
        if path:
            inputs[flag] = path
    out = check_output_dir(cfg.out_dir or default_out_dir(), command=COMMAND, overwrite=cfg.overwrite,
                           flag="--out-dir", legacy=LEGACY, inputs=inputs)
    device, dtype = resolve_device(cfg.runtime.device, cfg.runtime.dtype)
    if llm_dir is not None and cfg.blended_alphas:
        check_blendable(model_dir, llm_dir, max(cfg.blended_alphas))
    return Ready(model_dir, model_type, llm_dir, encoder_dir, asr_dir, out, device, dtype, sentences, judges)


def check_judges(cfg: EvaluateConfig, encoder_dir: Path | None) -> list[str]:
    """The judges to load: known names (did-you-mean), ``asr`` added for ``--asr`` (unless ``judges: []``)."""
    import difflib

    from qwen_tts_ext.evaluation.judges import JUDGES

    names = list(cfg.judges)
    problems = []
    for n in names:
        if n not in JUDGES:
            close = difflib.get_close_matches(n, list(JUDGES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown judge {n!r}{hint}; --judges takes a comma-separated list of "
                            f"{', '.join(JUDGES)} ('' for none)")
    UserError.collect(problems)
    if "speaker_ecapa" in names and encoder_dir is None:
        raise UserError("judge speaker_ecapa needs a speaker encoder: a Base --model, or --speaker-encoder BASE_CKPT")
    if names and cfg.asr and "asr" not in names:
        names.append("asr")  # the flag asks for WER/CER
    return names


def check_asr_dir(asr: str) -> Path:
    """A local transformers ASR model folder, resolved; one-line refusals for a missing path, a file or a
    folder without config.json (used by evaluate, score and the SFT recipe's eval.asr)."""
    path = Path(asr).expanduser()
    if not path.exists():
        raise UserError(f"--asr {asr}: no such folder; give a local transformers ASR model folder (e.g. "
                        "whisper-small/), or leave --asr out to skip the CER")
    if not path.is_dir():
        raise UserError(f"--asr {asr} is a file; give the ASR model's folder")
    if not (path / "config.json").is_file():
        raise UserError(f"--asr {asr} is not a transformers model folder (no config.json)")
    return path.resolve()


def check_voice(cfg: EvaluateConfig, model_dir: Path, model_config: dict) -> None:
    """The voice and language against the checkpoint's ``config.json`` (what ``Synthesizer.voice`` checks after loading)."""
    talker = model_config.get("talker_config") or {}
    kind = str(model_config.get("tts_model_type", "base"))
    v = cfg.voice
    if kind == "custom_voice":
        speakers = sorted(str(s).lower() for s in (talker.get("spk_id") or {}))
        if speakers:
            if not v.speaker and len(speakers) != 1:
                raise UserError(f"choose a speaker with --speaker: {', '.join(speakers)}")
            if v.speaker and v.speaker.strip().lower() not in speakers:
                raise UserError(f"unknown speaker {v.speaker!r}; --model {model_dir} has: {', '.join(speakers)}")
    elif not v.ref_audio:
        if not v.speaker:
            raise UserError("a Base checkpoint needs a voice: --ref-audio CLIP.wav, or --speaker NAME "
                            "--speakers-file FILE")
        file = Path(v.speakers_file).expanduser() if v.speakers_file else model_dir / "speakers.safetensors"
        if not file.is_file():
            raise UserError(f"a Base checkpoint needs --ref-audio CLIP, or --speaker with a speakers file "
                            f"({file} not found)")
        from qwen_tts_ext.checkpoint_io import read_safetensors_header

        try:
            names = list(read_safetensors_header(file)[0])
        except (OSError, ValueError, UserError):
            raise UserError(f"speakers file {file} is not a safetensors file (from data prep)") from None
        if v.speaker.strip().lower() not in {n.lower() for n in names}:
            raise UserError(f"unknown speaker {v.speaker!r}; {file} has: {', '.join(sorted(names))}")
    codes = talker.get("codec_language_id")
    if isinstance(codes, dict):
        languages = sorted({"auto", *(str(k).lower() for k in codes if "dialect" not in str(k))})
        if cfg.synthesis.language.strip().lower() not in languages:
            raise UserError(f"unsupported language {cfg.synthesis.language!r}; choose from: {', '.join(languages)}")


def check_blendable(model_dir: Path, llm_dir: Path, alpha: float) -> None:
    """The blend's own compatibility check (backbone, FFN names, shapes, dtypes) from the headers alone."""
    from qwen_tts_ext.blend.config import BlendConfig
    from qwen_tts_ext.blend.pipeline import plan_for
    from qwen_tts_ext.checkpoint_io import LazyCheckpoint

    try:
        with LazyCheckpoint(model_dir) as tts, LazyCheckpoint(llm_dir) as llm:
            plan_for(tts, llm, BlendConfig(tts=str(model_dir), llm=str(llm_dir), alpha=alpha))
    except UserError as exc:
        raise UserError(*(f"--llm {llm_dir} cannot be blended into --model {model_dir}: {p}"
                          for p in exc.problems)) from None


def _quiet() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("qwen_tts_ext.synthesis").setLevel(logging.ERROR)
    from qwen_tts_ext.synthesis.synthesize import quiet_transformers

    quiet_transformers()


def load_sweep_judges(cfg: EvaluateConfig, ready: Ready, notes: list[str]) -> tuple[list, tuple | None]:
    """The offline judges of ``ready.judges`` (a missing one: its install line in ``notes``) and the reference
    clip ``(audio, 24000)`` for ``spk_sim`` (``--ref-audio``; without it the speaker judge is not loaded)."""
    names = list(ready.judges or [])
    if not names:
        return [], None
    from qwen_tts_ext.evaluation.judges import load_judges

    ref_audio = None
    if cfg.voice.ref_audio:
        from qwen_tts_ext.synthesis.engine import load_audio_24k

        ref_audio = (load_audio_24k(cfg.voice.ref_audio), 24000)
    elif "speaker" in names:
        names.remove("speaker")
        notes.append("spk_sim (independent speaker similarity) not measured: it needs the voice's clip, --ref-audio")
    options = {}
    if ready.asr_dir and "asr" in names:
        options["asr"] = str(ready.asr_dir)
    if "speaker_ecapa" in names:
        options["checkpoint"] = str(ready.encoder_dir)
    judges, skipped = load_judges(names, **options)
    for note in skipped:
        notes.append(note)
        print(f"warning: {note}", file=sys.stderr)
    return judges, ref_audio


def run(cfg: EvaluateConfig) -> int:
    """``qwen-tts-ext evaluate``: check, load, sweep, write the report, print the table and the alpha."""
    ready = preflight(cfg)
    _quiet()

    from qwen_tts_ext.evaluation.recommend import recommend_alpha
    from qwen_tts_ext.evaluation.report import markdown_table, write_report_files
    from qwen_tts_ext.evaluation.sweep import Embedder, asr_transcriber, run_sweep
    from qwen_tts_ext.outputs import output_dir
    from qwen_tts_ext.synthesis.engine import Synthesizer

    synth = Synthesizer.load(ready.model_dir, device=ready.device, dtype=ready.dtype)
    v = cfg.voice
    voice = synth.voice(speaker=v.speaker or None, ref_audio=(v.ref_audio or None) if synth.model_type == "base" else None,
                        speakers_file=v.speakers_file or None)
    options = cfg.synthesis
    notes: list[str] = []

    # Similarity: the speaker encoder of a Base checkpoint (the model itself, or --speaker-encoder).
    embedder = Embedder.from_checkpoint(ready.encoder_dir) if ready.encoder_dir else None
    if embedder is None:
        notes.append("no speaker encoder (custom_voice model without --speaker-encoder BASE_CKPT): similarity "
                     "and drift not measured")
    reference, ref_desc = None, None
    if embedder is not None:
        if v.ref_audio:
            from qwen_tts_ext.synthesis.engine import load_audio_24k

            reference = embedder(load_audio_24k(v.ref_audio), 24000)
            ref_desc = f"reference clip {v.ref_audio}"
        elif voice.kind == "xvector" and voice.xvector is not None and voice.xvector.numel() == embedder.encoder.dim:
            reference = voice.xvector.numpy()
            ref_desc = f"x-vector of {voice.name} ({voice.source})"
        elif v.speakers_file and voice.kind == "speaker":
            from qwen_tts_ext.prepared import load_speakers

            table = {k.lower(): val for k, val in load_speakers(v.speakers_file).items()}
            if voice.speaker in table:
                reference = table[voice.speaker]
                ref_desc = f"x-vector of {voice.speaker} in {v.speakers_file}"
    judges, ref_audio = load_sweep_judges(cfg, ready, notes)
    transcribe, asr_note = None, None
    if not any(j.name == "asr" for j in judges):
        transcribe, asr_note = asr_transcriber(ready.asr_dir, device=ready.device)
    if asr_note:
        notes.append(asr_note)
        print(f"warning: {asr_note}", file=sys.stderr)

    with output_dir(ready.out, command=COMMAND, overwrite=cfg.overwrite, flag="--out-dir", legacy=LEGACY) as tmp:
        audio_dir = None
        if cfg.save_audio:
            audio_dir = tmp / "audio"
            audio_dir.mkdir()
        rows, default_desc = run_sweep(
            synth, voice, options, alphas=cfg.alphas, llm=str(ready.llm_dir) if ready.llm_dir else None,
            sentences=ready.sentences, script=cfg.script or None, embedder=embedder, reference=reference,
            transcribe=transcribe, audio_dir=audio_dir, judges=judges, ref_audio=ref_audio,
            language=None if str(options.language).lower() == "auto" else options.language,
        )
        t = cfg.tolerances
        rec = recommend_alpha([r.as_dict() for r in rows], t)
        rec.notes = notes + rec.notes
        report = {
            "settings": {
                "model": cfg.runtime.model,
                "llm": cfg.llm or None,
                "voice": voice.describe(),
                "num_sentences": len(ready.sentences),
                "num_script_segments": len(synth.plan(cfg.script, options)) if cfg.script else 0,
                "seed": options.seed,
                "similarity_reference": ref_desc or default_desc,
                "tolerances": {"stop": t.stop, "similarity": t.similarity, "cer": t.cer,
                               "min_stop_rate": t.min_stop_rate},
                "asr": bool(transcribe) or any(j.name == "asr" for j in judges),
                "judges": [j.name for j in judges],
                "config": config_to_dict(cfg),
            },
            "rows": [r.as_dict() for r in rows],
            "recommendation": rec.as_dict(),
        }
        write_report_files(report, tmp)

    emit(markdown_table(report["rows"], rec.alpha if rec.status == "ok" else None, rec.verdicts))
    for note in rec.notes:
        emit(f"note: {note}")
    if rec.status == "baseline-unstable":
        emit("recommended alpha: none (0): alpha 0 already fails to stop; fix the checkpoint first")
    else:
        emit(f"recommended alpha: {rec.alpha:g}")
    emit(f"wrote {ready.out / 'sweep.md'}, sweep.json, sweep.png" + (", audio/" if cfg.save_audio else ""))
    return 0
