"""``qwen-tts-ext score`` / ``python scripts/score.py``: judge any audio offline, per clip and in summary."""

from __future__ import annotations

from qwen_tts_ext.command import Command, Option
from qwen_tts_ext.evaluation.score_config import ScoreConfig

DESCRIPTION = """\
Judge audio with independent offline judges (weights inside installed packages, no downloads): speaker
similarity to a reference (resemblyzer; the model's own ECAPA with --speaker-encoder), naturalness
(DistillMOS, DNSMOS), intelligibility (WER/CER: pocketsphinx for English, or a local ASR folder), and timing
(speaking rate, leading/trailing silence, truncation, duration vs the text, stop by EOS for our own WAVs).

--audio is any folder of WAV/FLAC/OGG files (searched recursively), one audio file, or a manifest
(JSONL/CSV with audio,text[,ref_audio,speaker,language] columns, as data prep reads). A clip's transcript
comes from --text (every clip), --texts (one line per clip, sorted file order), our synthesis JSON sidecar
(NAME.json), NAME.txt or NAME.lab beside it, or the manifest's text column. A clip that cannot be decoded
is reported in its row; everything else is checked before any judge loads.
"""

EPILOG = """\
examples:
  qwen-tts-ext score --audio outputs/ --ref-audio alice_ref.wav --out-dir reports/alice
  qwen-tts-ext score --audio clips/ --texts transcripts.txt --judges distillmos,timing --out-dir reports/q
  qwen-tts-ext score --audio eval.jsonl --asr whisper-small/ --speaker-encoder Qwen3-TTS-12Hz-1.7B-Base \\
      --out-dir reports/eval

Writes scores.csv (one row per clip, one column per metric), scores.json (rows, summary, the judges that
ran and those skipped with how to install them, timing, settings) and scores.md (summary with each
metric's direction, per-clip table). Guidance on every metric: docs/judges.md.

The summary table and the report's path go to stdout; notes and the progress bar to stderr.
--out-dir (default outputs/score-<timestamp>) must be new or empty; --overwrite replaces only a previous
report of this command.
exit status: 0 success, 2 user error (bad arguments, missing inputs, output in the way), 130 interrupted.
"""

COMMAND = Command(
    name="score", description=DESCRIPTION, epilog=EPILOG, config=ScoreConfig,
    run="qwen_tts_ext.evaluation.score:run",
    options=[
        Option("audio", "--audio", "a folder of audio files, one audio file, or a manifest .jsonl/.csv",
               metavar="DIR|MANIFEST"),
        Option("text", "--text", "one transcript for every clip", metavar="TEXT"),
        Option("texts", "--texts", "text file with one transcript per clip, in sorted file order", metavar="FILE"),
        Option("ref_audio", "--ref-audio", "a clip of the intended speaker: the similarity reference for every "
               "clip (a manifest's ref_audio column wins where a row has one)", metavar="WAV"),
        Option("judges", "--judges", "comma-separated judges (default: every installed judge): speaker, "
               "speaker_ecapa, distillmos, dnsmos, asr, timing", metavar="LIST"),
        Option("asr", "--asr", "local transformers ASR model folder (Whisper, Qwen3-ASR): WER/CER in any "
               "language (default: pocketsphinx, English only)", metavar="DIR"),
        Option("speaker_encoder", "--speaker-encoder", "Qwen3-TTS Base checkpoint: adds the model's own ECAPA "
               "similarity (spk_sim_ecapa)", metavar="BASE_CKPT"),
        Option("device", "--device", "cpu, cuda, cuda:N, mps or auto: where speaker_ecapa and a transformers --asr "
               "run (default cpu)"),
        Option("threads", "--threads", "CPU threads per judge (default 1: faster on a busy machine)", metavar="N"),
        Option("jobs", "--jobs", "judges run side by side (default 2 where there are 2+ cores; 1: one at a time)",
               metavar="N"),
        Option("language", "--language", "language of every clip (default auto: a manifest's or sidecar's "
               "language, else unknown)"),
        Option("out_dir", "--out-dir", "report folder, new or empty (default outputs/score-<timestamp>)",
               metavar="REPORT"),
        Option("overwrite", "--overwrite", "replace a previous report of this command at --out-dir", switch=True),
        Option("progress", "--quiet", "no progress bar", switch=False),
    ],
)


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
