"""The consistency report: does locking the voice hold its identity better than re-describing it?

The same report sentences are spoken, untagged and once per emotion tag, by
(a) the VoiceDesign model re-described on every line (instruct = description, plus the tag's
    instruction from ``configs/emotions.yaml`` for a tagged line), and
(b) the locked speaker of the exported checkpoint with the tag in the script (``[Angry] ...``,
    through the suite's synthesis engine).
Every clip is embedded by the independent ``speaker`` judge (resemblyzer) and compared with the
identity centroid of the kept corpus. Per condition:

- ``across_sentences_sd``: the SD of the untagged clips' similarity over the sentences;
- ``across_tags_sd``: for each sentence, the SD of its similarity over the untagged clip and the tagged
  ones, averaged over sentences (how much a tag moves the identity);
- ``pairwise_mean``: the mean cosine between every two clips of the condition (1 = one voice);
- ``sim_mean``: the mean similarity to the centroid.

The claim is (b) tighter than (a): smaller SDs and a higher pairwise mean. The report states, for each
number, whether it holds; on tiny random models the judges measure noise-shaped audio, so the numbers
show that the pipeline measures, not that a voice was locked.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

import numpy as np


def spread(sims: list[list[float | None]], vectors: list[np.ndarray]) -> dict[str, Any]:
    """The condition's numbers from ``sims[sentence][0 = untagged, 1.. = tags]`` and every clip's d-vector."""
    untagged = [row[0] for row in sims if row and row[0] is not None]
    per_sentence = [[v for v in row if v is not None] for row in sims]
    tag_sds = [float(np.std(vals)) for vals in per_sentence if len(vals) >= 2]
    flat = [v for row in per_sentence for v in row]
    pairs = [float(np.dot(a, b)) for a, b in combinations(vectors, 2)]
    r = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
    return {
        "clips": sum(len(row) for row in sims), "embedded": len(flat),
        "sim_mean": r(np.mean(flat)) if flat else None,
        "across_sentences_sd": r(np.std(untagged)) if len(untagged) >= 2 else None,
        "across_tags_sd": r(np.mean(tag_sds)) if tag_sds else None,
        "pairwise_mean": r(np.mean(pairs)) if pairs else None,
    }


def verdict(a: dict, b: dict) -> dict[str, bool | None]:
    """Per number: does (b) the locked speaker beat (a) the re-described designer? None: not measured."""
    out: dict[str, bool | None] = {}
    for key, better in (("across_sentences_sd", "lower"), ("across_tags_sd", "lower"), ("pairwise_mean", "higher")):
        if a.get(key) is None or b.get(key) is None:
            out[key] = None
        else:
            out[key] = b[key] < a[key] if better == "lower" else b[key] > a[key]
    return out


def measure(clip_fn: Callable[[int, str | None, str], np.ndarray], sentences: list[str], tags: list[str | None],
            embed: Callable[[np.ndarray], np.ndarray | None], centroid: np.ndarray, out_dir: Path,
            tick: Callable[[], Any] | None = None) -> tuple[dict, list[dict]]:
    """Speak every (sentence, tag) with ``clip_fn(index, tag, text) -> 24 kHz audio``; embed and compare."""
    import soundfile as sf

    from qwen_tts_ext.constants import SAMPLE_RATE

    out_dir.mkdir(parents=True, exist_ok=True)
    sims: list[list[float | None]] = []
    vectors: list[np.ndarray] = []
    clips = []
    same_as_untagged = 0  # tagged clips sample-identical to the sentence's untagged clip: the tag changed nothing
    for j, text in enumerate(sentences):
        row: list[float | None] = []
        first: np.ndarray | None = None
        for tag in tags:
            audio = clip_fn(j, tag, text)
            if tag is None:
                first = audio
            elif first is not None and audio.shape == first.shape and np.array_equal(audio, first):
                same_as_untagged += 1
            name = f"s{j:02d}-{(tag or 'untagged').lower().replace(' ', '_')}.wav"
            sf.write(str(out_dir / name), audio, SAMPLE_RATE, subtype="PCM_16")
            vec = embed(audio)
            sim = None if vec is None else float(np.dot(vec / np.linalg.norm(vec), centroid))
            if vec is not None:
                vectors.append(vec / np.linalg.norm(vec))
            row.append(sim)
            clips.append({"file": f"{out_dir.name}/{name}", "sentence": j, "tag": tag,
                          "spk_sim_centroid": None if sim is None else round(sim, 4)})
            if tick is not None:
                tick()
        sims.append(row)
    return {**spread(sims, vectors), "tagged_identical_to_untagged": same_as_untagged}, clips


def write_report(out_dir: Path, a: dict, b: dict, clips: dict, meta: dict) -> dict:
    """consistency.json and consistency.md in ``out_dir``; returns the JSON."""
    holds = verdict(a, b)
    fmt = lambda v: "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    word = {True: "yes", False: "NO", None: "not measured"}
    lines = [
        "# Identity consistency: re-described (a) vs locked (b)", "",
        f"Voice `{meta.get('name')}`: \"{meta.get('description')}\". Similarity is the cosine of resemblyzer "
        "d-vectors (the `speaker` judge, independent of the TTS model) to the identity centroid of the kept corpus.",
        "", "| number | (a) VoiceDesign, re-described per line | (b) locked speaker + tags | (b) tighter? |",
        "|---|---:|---:|---|",
    ]
    for key, label in (("across_sentences_sd", "SD across sentences (lower = tighter)"),
                       ("across_tags_sd", "SD across emotion tags (lower = tighter)"),
                       ("pairwise_mean", "mean pairwise cosine (higher = one voice)"),
                       ("sim_mean", "mean cosine to the centroid"), ("embedded", "clips embedded")):
        mark = word[holds[key]] if key in holds else ""
        lines.append(f"| {label} | {fmt(a.get(key))} | {fmt(b.get(key))} | {mark} |")
    lines += ["", f"Sentences: {meta.get('sentences')}; tags: {', '.join(meta.get('tags') or []) or '(none)'}; "
              f"seed {meta.get('seed')}.", ""]
    notes = list(meta.get("notes", []))
    for label, side in (("(a)", a), ("(b)", b)):
        if side.get("tagged_identical_to_untagged"):
            notes.append(f"{label}: {side['tagged_identical_to_untagged']} tagged clip(s) are sample-identical to "
                         "their "
                         "untagged clip: the tag did not change the audio, so its spread across tags is trivially 0")
        if side.get("embedded", 0) < side.get("clips", 0):
            notes.append(f"{label}: {side['clips'] - side['embedded']} of {side['clips']} clips had too little voiced "
                         "audio for resemblyzer and are left out of the numbers")
    meta["notes"] = notes
    for note in notes:
        lines.append(f"- {note}")
    (out_dir / "consistency.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    doc = {"designer_redescribed": a, "locked_speaker": b, "locked_tighter": holds, "clips": clips, **meta}
    (out_dir / "consistency.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    return doc
