"""``qwen-tts-ext prepare`` / ``python finetuning/prepare_data.py``: the data-preparation command line."""

from __future__ import annotations

from qwen_tts_ext.command import Command, Option
from qwen_tts_ext.prep.config import PrepareConfig

DESCRIPTION = """\
Turn recordings + transcripts into a Qwen3-TTS fine-tuning dataset: validated 24 kHz audio, 12 Hz
speech codes [frames, 16], and per-speaker x-vectors.

Before any audio is read, the settings, the output folder, what --model (a Qwen3-TTS checkpoint with
a speaker encoder, or --speaker-encoder BASE for a CustomVoice model) and --device are, and the
manifest's columns are checked; every problem is one `error:` line (exit 2).
"""

EPILOG = """\
examples:
  %(prog)s --manifest data/my.jsonl --model Qwen3-TTS-12Hz-1.7B-Base --output prepared/my
  %(prog)s --config configs/prepare.yaml trim=vad max_seconds=20
  %(prog)s --manifest my_audiofolder/ --model BASE --output out --text-column transcription
  %(prog)s ... --shard 0/4     # machine 1 of 4 (0-based); each writes its own --output
  %(prog)s --merge out0 out1 out2 out3 --output all   # join the slices
  %(prog)s ... --dry-run       # validate every clip, write rejects.jsonl + stats.json only

manifest rows (JSONL/CSV): audio, text, and optional speaker, language, instruct, ref_audio;
relative paths resolve against the manifest's folder. Bad clips never stop the run: they are
listed with a reason in OUTPUT/rejects.jsonl. An interrupted run (Ctrl-C, kill -9) resumes
where it stopped when rerun with the same arguments; a rerun of a finished job does nothing.

output: dataset/ (datasets.save_to_disk), speakers.safetensors + speakers.json,
train_with_codes.jsonl (upstream format), rejects.jsonl, stats.json, prepare_config.json. It is
built beside --output and renamed into place when complete; its path is printed on stdout.
--output must be new, empty, or a previous `prepare` output: the same job is left as it is, a dry-run
report is replaced, another job's dataset only with --overwrite. A folder holding anything else,
or the manifest or its audio, is refused even with --overwrite.
exit status: 0 success, 2 user error (bad arguments, inputs, output in the way), 130 interrupted.
"""

_IO, _COLS, _CHECKS, _RUN = "inputs and output", "manifest columns", "validation", "compute and behaviour"


def _opt(key: str, help: str, group: str, **kw) -> Option:
    """``--key-name VALUE`` for config key ``key_name`` (the metavar: the key's last word)."""
    kw.setdefault("metavar", None if kw.get("switch") is not None else key.split("_")[-1].upper())
    return Option(key, "--" + key.replace("_", "-"), help, group=group, **kw)


COMMAND = Command(
    name="prepare", prog="qwen-tts-ext prepare", description=DESCRIPTION, epilog=EPILOG, config=PrepareConfig,
    run="qwen_tts_ext.prep.pipeline:run",
    options=[
        _opt("manifest", "JSONL/CSV manifest, or a local HF dataset (save_to_disk folder, audiofolder, parquet)", _IO),
        _opt("model", "Qwen3-TTS checkpoint folder (or hub id): its speech_tokenizer/ and speaker encoder are used", _IO),
        _opt("output", "output folder (new, empty, or a previous prepare output; appears atomically when done)", _IO),
        _opt("tokenizer", "speech tokenizer folder (default: MODEL/speech_tokenizer)", _IO),
        _opt("speaker_encoder", "Base checkpoint to borrow the speaker encoder from (needed when --model is "
             "CustomVoice)", _IO),
        _opt("split", "split of a HF dataset (default: train)", _IO),
        _opt("merge", "instead of preparing: merge the outputs of --shard i/n runs into --output (exact speaker "
             "means; manifest order)", _IO, many=True, metavar="SLICE_DIR"),
        _opt("audio_column", "column with audio paths (default: audio)", _COLS),
        _opt("text_column", "column with transcripts (default: text)", _COLS),
        _opt("speaker_column", "column with speaker names (default: speaker)", _COLS),
        _opt("language_column", "column with languages (default: language)", _COLS),
        _opt("instruct_column", "column with style/emotion instructions (default: instruct)", _COLS),
        _opt("ref_audio_column", "column with reference clips for speaker embeddings (default: ref_audio)", _COLS),
        _opt("default_speaker", "speaker for rows without one (default: speaker)", _COLS),
        _opt("default_language", "language for rows without one (default: auto)", _COLS),
        _opt("min_seconds", "reject clips shorter than this after trimming (default: 0.5)", _CHECKS),
        _opt("max_seconds", "reject clips longer than this after trimming (default: 30)", _CHECKS),
        _opt("silence_db", "reject clips whose loudest 50 ms is below this dBFS (default: -60)", _CHECKS),
        _opt("trim", "edge-silence trimming: none | energy | vad (silero-vad) (default: none)", _CHECKS),
        _opt("ref_mode", "speaker vectors from: ref (ref_audio clips; all clips when a speaker has none) | all",
             _CHECKS),
        _opt("device", "torch device for the tokenizer and speaker encoder: cpu, cuda, cuda:N, mps, auto "
             "(default: cpu)", _RUN),
        _opt("dtype", "compute dtype: float32 | bfloat16 | float16 (default: float32)", _RUN),
        _opt("batch_seconds", "padded audio seconds per tokenizer batch (default: 240)", _RUN),
        _opt("max_batch", "max clips per tokenizer batch (default: 64)", _RUN),
        _opt("num_workers", "threads decoding/resampling audio (default: 2; 0 = main thread)", _RUN),
        _opt("shard_size", "rows per resumable work shard (default: 128)", _RUN),
        _opt("embed_threads", "torch CPU threads for per-clip speaker x-vectors (default: 1; 0 = torch default)",
             _RUN),
        _opt("shard", "i/n: prepare only the i-th of n contiguous slices (0-based, default 0/1)", _RUN),
        _opt("dry_run", "validate and report without encoding (writes rejects.jsonl + stats.json)", _RUN,
             switch=True),
        _opt("overwrite", "replace a previous prepare output of other inputs or settings (never other folders)",
             _RUN, switch=True),
        _opt("keep_work", "keep the shard work folder after success", _RUN, switch=True),
        Option("progress", "--quiet", "no progress bar or summary (the output path is still printed)", switch=False,
               group=_RUN),
    ],
)


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
