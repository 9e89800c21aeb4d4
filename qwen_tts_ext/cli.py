"""``qwen-tts-ext``: one entry point that dispatches to the suite's commands.

Each subcommand is the same program as its script (``finetuning/*.py``, ``scripts/*.py``), so
``qwen-tts-ext blend --help`` and ``python finetuning/darwin_blend.py --help`` say the same thing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# subcommand -> (module with a ``main(argv)`` function, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "make-tiny": ("qwen_tts_ext.testing.tiny_checkpoint", "build tiny random checkpoints for tests and demos"),
}


def register(name: str, module: str, description: str) -> None:
    COMMANDS[name] = (module, description)


def _optional_commands() -> None:
    for name, module, desc in (
        ("prepare", "qwen_tts_ext.prep.cli", "recordings + transcripts -> validated 12 Hz codes dataset"),
        ("sft", "qwen_tts_ext.train.cli", "fine-tune a checkpoint (use `accelerate launch` for several devices)"),
        ("blend", "qwen_tts_ext.blend.cli", "Darwin FFN blend of an LLM into the talker"),
        ("synthesize", "qwen_tts_ext.synthesis.cli", "speak a tagged script with one locked voice"),
        ("evaluate", "qwen_tts_ext.evaluation.cli", "Darwin alpha sweep: stop rate, duration, similarity, drift, RTF"),
        ("studio", "qwen_tts_ext.studio", "the browser studio (Gradio)"),
        ("score", "qwen_tts_ext.evaluation.score_cli", "judge audio offline: similarity, MOS, WER, timing per clip"),
        ("quantize", "qwen_tts_ext.quantize.cli", "INT4 (AWQ) export of the talker's projections, with its measured cost"),
        ("search", "qwen_tts_ext.blend.search_cli", "Darwin genome search: per-layer blend ratios by CMA-ES"),
        ("design-voice", "qwen_tts_ext.design.cli", "describe a voice in words, render + judge a corpus, lock it by SFT"),
        ("grpo", "qwen_tts_ext.grpo.cli", "GRPO post-training of the talker with measured rewards (stop repair)"),
    ):
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) is not None:
            COMMANDS.setdefault(name, (module, desc))


def main(argv: list[str] | None = None) -> int:
    import importlib.util  # noqa: F401  (used by _optional_commands)

    _optional_commands()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: qwen-tts-ext COMMAND [args...]\n\ncommands:")
        for name, (_, desc) in COMMANDS.items():
            print(f"  {name:<12} {desc}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
