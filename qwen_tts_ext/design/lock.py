"""Lock the kept takes into a speaker slot with the suite's own commands, then measure the lock.

``prepare_and_train``: the kept takes become a manifest (speaker = ``--name``) for data prep
(``qwen_tts_ext.prep.prepare``), and the prepared folder trains with the SFT recipe
(``qwen_tts_ext.train.loop.train``): the export is a custom_voice checkpoint whose new speaker sits
next to the base model's built-in ones. ``consistency_report``: the same sentences, untagged and per
emotion tag, through the designer re-described per line and through the locked speaker with tags
(``report.py`` says what is measured). ``write_card``: the export's README.md records the description,
the designer, the filter thresholds, the counts and the consistency numbers.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def prepare_and_train(cfg, ready, kept: list[dict], tmp: Path, root: Path) -> Path:
    """Data prep then SFT on the kept takes (audio at ``root / audio``); returns the export folder."""
    from qwen_tts_ext.config import load_config
    from qwen_tts_ext.prep import PrepareConfig, prepare
    from qwen_tts_ext.prep.report import write_jsonl
    from qwen_tts_ext.train.config import SFTConfig
    from qwen_tts_ext.train.loop import train

    manifest = tmp / "selection" / "corpus.jsonl"
    write_jsonl(manifest, [{"audio": str(root / r["audio"]), "text": r["text"], "speaker": cfg.name,
                            "language": r["language"]} for r in kept])
    base = [f"manifest={manifest}", f"model={ready.model}", f"output={tmp / 'prepared'}", f"device={cfg.device}",
            "ref_mode=all", f"progress={'true' if cfg.progress else 'false'}"]
    if ready.speaker_encoder:
        base.append(f"speaker_encoder={ready.speaker_encoder}")
    prepared = prepare(load_config(PrepareConfig, None, base + cfg.overrides("prepare")))
    sft = load_config(SFTConfig, cfg.sft_recipe, [*cfg.overrides("sft"), f"model={ready.model}",
                                                  f"data.path={prepared}", f"output_dir={tmp / 'run'}"])
    summary = train(sft)
    return Path(summary.get("export") or tmp / "run" / "export")


def consistency_report(cfg, ready, tts: Any, export: Path, centroid: np.ndarray | None, tmp: Path) -> dict | None:
    """(a) the designer re-described per line vs (b) the locked speaker with tags; writes ``report/``."""
    from qwen_tts_ext.design import render
    from qwen_tts_ext.design.report import measure, write_report
    from qwen_tts_ext.evaluation.judges import load_judge
    from qwen_tts_ext.synthesis.config import SynthesisOptions
    from qwen_tts_ext.synthesis.emotions import load_emotions
    from qwen_tts_ext.synthesis.engine import Synthesizer

    out = tmp / "report"
    out.mkdir()
    if centroid is None:
        (out / "consistency.md").write_text("No take could be embedded: no identity centroid, no report.\n")
        return None
    speaker = load_judge("speaker")
    embed = lambda audio: speaker.embed(audio, 24000)  # noqa: E731
    tags: list[str | None] = [None, *cfg.report.emotion_tags]
    sentences = ready.report_sentences
    emotions = load_emotions()
    sampling = render.sampling_kwargs(cfg.render)
    lang = cfg.render.language
    from tqdm import tqdm

    bar = tqdm(total=2 * len(sentences) * len(tags), desc="consistency report", file=sys.stderr,
               disable=not cfg.progress, leave=False)

    def designer_clip(j: int, tag: str | None, text: str) -> np.ndarray:
        instruct = cfg.description if tag is None else f"{cfg.description} {emotions.resolve(tag).text}"
        return render.speak(tts, text, instruct, lang, cfg.report.seed + j, render.cap_for(text, cfg.render),
                            sampling).audio

    a, clips_a = measure(designer_clip, sentences, tags, embed, centroid, out / "designer", tick=lambda: bar.update(1))
    synth = Synthesizer.load(export, device=cfg.device, dtype=cfg.dtype)
    voice = synth.voice(speaker=cfg.name)
    options = SynthesisOptions(language=lang, seed=cfg.report.seed, temperature=cfg.render.temperature,
                               top_k=cfg.render.top_k, top_p=cfg.render.top_p, cap_margin=cfg.render.cap_margin,
                               cap_slack_seconds=cfg.render.cap_slack_seconds,
                               max_segment_seconds=cfg.render.max_segment_seconds)

    def locked_clip(j: int, tag: str | None, text: str) -> np.ndarray:
        script = text if tag is None else f"[{tag}] {text}"
        segs = list(synth.generate(script, voice, dataclasses.replace(options, seed=cfg.report.seed + j)))
        return np.concatenate([s.audio for s in segs]).astype(np.float32)

    b, clips_b = measure(locked_clip, sentences, tags, embed, centroid, out / "locked", tick=lambda: bar.update(1))
    bar.close()
    notes = ["(a) and (b) speak the same sentences with the same seeds; (b) is the export with the tag in the script."]
    if synth.ignores_instructions:
        notes.append(f"the {synth.model_size} model ignores instructions (stock qwen_tts drops them for 0.6B): tags "
                     "cannot move (b), so its spread across tags says nothing about a locked delivery")
    if str(ready.model_type) == "base":
        notes.append("--model is a Base checkpoint: its instruction following is untrained, so tags may move (b) "
                     "little")
    doc = write_report(out, a, b, {"designer": clips_a, "locked": clips_b}, {
        "name": cfg.name, "description": cfg.description, "sentences": len(sentences),
        "tags": [t for t in tags if t], "seed": cfg.report.seed, "notes": notes})
    return doc


def write_card(export: Path, design: dict) -> None:
    """The export's README.md: what the voice is, where it came from, how the corpus was filtered."""
    f = design["config"]["filter"]
    sel = design["selection"]
    lines = [
        f"# `{design['name']}`: a designed, locked voice", "",
        f"A custom_voice checkpoint made by `qwen-tts-ext design-voice`: the voice was described in words, rendered "
        "by a VoiceDesign model, filtered for one consistent identity and fine-tuned into the speaker slot "
        f"`{design['name']}` (next to any built-in speakers of the base model).", "",
        f"- description: \"{design['description']}\"",
        f"- designer (VoiceDesign): `{design['designer']}`",
        f"- fine-tuned from: `{design['model']}`" + (f" (x-vectors from `{design['speaker_encoder']}`)"
                                                       if design['speaker_encoder'] else ""),
        f"- corpus: {sel['kept']} of {sel['takes']} takes kept ({design['train_sentences']} sentences x "
        f"{design['config']['render']['takes']} seeds, plus any extra takes); dropped by reason: "
        f"{json.dumps(sel['rejected_by_reason'])}",
        f"- identity filter: resemblyzer centroid, off_voice below cosine {sel['identity_threshold']} "
        f"(max_distance {f['max_distance']}, mad_k {f['mad_k']}, {f['centroid_rounds']} rounds)",
        f"- quality gates: max_cer {f['max_cer']}, min_mos {f['min_mos']}, drop_truncated {f['drop_truncated']}, "
        f"require_eos {f['require_eos']} (judges: {', '.join(f['judges']) or 'none'})", "",
        "```python",
        "from qwen_tts import Qwen3TTSModel",
        "tts = Qwen3TTSModel.from_pretrained(\"THIS_FOLDER\")",
        f"wavs, sr = tts.generate_custom_voice(text=\"...\", speaker=\"{design['name']}\",",
        "                                      instruct=\"Whisper softly.\")",
        "```", "",
    ]
    c = design.get("consistency")
    if c:
        a, b, holds = c["designer_redescribed"], c["locked_speaker"], c["locked_tighter"]
        lines += ["## Identity consistency (resemblyzer, cosine to the corpus centroid)", "",
                  "| number | VoiceDesign re-described | locked + tags | locked tighter? |", "|---|---:|---:|---|"]
        for key in ("across_sentences_sd", "across_tags_sd", "pairwise_mean"):
            lines.append(f"| {key} | {a.get(key)} | {b.get(key)} | {holds.get(key)} |")
        lines.append("")
    lines.append("Provenance: `design.json` (every setting, versions, counts) and `sft_export.json` (the SFT recipe).")
    (export / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
