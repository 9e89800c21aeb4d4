"""``qwen-tts-ext prepare`` / ``python finetuning/prepare_data.py``: the data-preparation command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

from qwen_tts_ext.config import load_config
from qwen_tts_ext.errors import UserError, cli_entry
from qwen_tts_ext.prep.config import PrepareConfig

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
where it stopped when rerun with the same arguments.

output: dataset/ (datasets.save_to_disk), speakers.safetensors + speakers.json,
train_with_codes.jsonl (upstream format), rejects.jsonl, stats.json, prepare_config.json.
"""

_HELP = {
    "manifest": "JSONL/CSV manifest, or a local HF dataset (save_to_disk folder, audiofolder, parquet)",
    "model": "Qwen3-TTS Base checkpoint folder (or hub id): its speech_tokenizer/ and speaker encoder are used",
    "output": "output folder (appears atomically when done)",
    "tokenizer": "speech tokenizer folder (default: MODEL/speech_tokenizer)",
    "speaker_encoder": "Base checkpoint to borrow the speaker encoder from (needed when --model is CustomVoice)",
    "split": "split of a HF dataset (default: train)",
    "audio_column": "column with audio paths (default: audio)",
    "text_column": "column with transcripts (default: text)",
    "speaker_column": "column with speaker names (default: speaker)",
    "language_column": "column with languages (default: language)",
    "instruct_column": "column with style/emotion instructions (default: instruct)",
    "ref_audio_column": "column with reference clips for speaker embeddings (default: ref_audio)",
    "default_speaker": "speaker for rows without one (default: speaker)",
    "default_language": "language for rows without one (default: auto)",
    "min_seconds": "reject clips shorter than this after trimming (default: 0.5)",
    "max_seconds": "reject clips longer than this after trimming (default: 30)",
    "silence_db": "reject clips whose loudest 50 ms is below this dBFS (default: -60)",
    "trim": "edge-silence trimming: none | energy | vad (silero-vad) (default: none)",
    "ref_mode": "speaker vectors from: ref (ref_audio clips; all clips when a speaker has none) | all",
    "device": "torch device for the tokenizer and speaker encoder (default: cpu)",
    "dtype": "compute dtype: float32 | bfloat16 | float16 (default: float32)",
    "batch_seconds": "padded audio seconds per tokenizer batch (default: 240)",
    "max_batch": "max clips per tokenizer batch (default: 64)",
    "num_workers": "threads decoding/resampling audio (default: 2; 0 = main thread)",
    "shard_size": "rows per resumable work shard (default: 128)",
    "embed_threads": "torch CPU threads for per-clip speaker x-vectors (default: 1; 0 = torch default)",
    "shard": "i/n: prepare only the i-th of n contiguous slices (0-based, default 0/1)",
}

_BOOL_FLAGS = {"dry_run": "validate and report without encoding", "overwrite": "replace an output folder that "
               "holds a different dataset", "keep_work": "keep the shard work folder after success"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qwen-tts-ext prepare",
        description="Turn recordings + transcripts into a Qwen3-TTS fine-tuning dataset: validated 24 kHz audio, "
        "12 Hz speech codes [frames, 16], and per-speaker x-vectors.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML file of settings (keys = the long options below)")
    for name, text in _HELP.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar=name.split("_")[-1].upper(),
                       help=text)
    for name, text in _BOOL_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, action="store_true", default=None, help=text)
    p.add_argument("--merge", nargs="+", metavar="SLICE_DIR", help="instead of preparing: merge the outputs of "
                   "--shard i/n runs into --output (exact speaker means; manifest order)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra settings, e.g. trim=vad max_seconds=20")
    return p


@cli_entry
def _run(args: argparse.Namespace) -> int:
    from qwen_tts_ext.prep.pipeline import prepare

    overrides = []
    hints = typing.get_type_hints(PrepareConfig)
    for f in dataclasses.fields(PrepareConfig):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if isinstance(value, bool):
            overrides.append(f"{f.name}={str(value).lower()}")
        elif hints[f.name] is str:  # quote: a path may hold YAML syntax ("#", "[", ": ")
            overrides.append(f"{f.name}={json.dumps(value)}")
        else:
            overrides.append(f"{f.name}={value}")
    if args.quiet:
        overrides.append("progress=false")
    for item in args.overrides:
        if "=" not in item:
            raise UserError(f"unexpected argument {item!r}; settings look like key=value (see --help)")
    cfg = load_config(PrepareConfig, args.config, overrides + list(args.overrides))
    if args.merge:
        from qwen_tts_ext.prep.merge import merge_prepared

        if not cfg.output:
            raise UserError("--merge needs --output (the merged folder)")
        out = merge_prepared(args.merge, cfg.output, overwrite=cfg.overwrite)
        if cfg.progress:
            print(out)
        return 0
    out = prepare(cfg)
    if not cfg.progress:
        return 0
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _run(args)


if __name__ == "__main__":
    raise SystemExit(main())
