"""``qwen-tts-ext design-voice`` / ``python finetuning/design_voice.py``: a voice from words, locked by SFT."""

from __future__ import annotations

from qwen_tts_ext.command import Command, Option
from qwen_tts_ext.design.config import DesignConfig

DESCRIPTION = """\
Describe a voice in words, then lock it. A VoiceDesign checkpoint renders a corpus from the description
(sentences x seeds: the shipped, phonetically varied list of --language in data/design_sentences/, or
--sentences FILE); every take is judged offline: an identity centroid of resemblyzer d-vectors (independent
of the TTS model) drops the takes that do not agree with the others (off_voice), then the intelligibility
(CER), MOS, truncation and stop-by-EOS gates. The kept takes go through data prep and SFT (the suite's own
commands) into a custom_voice checkpoint whose new speaker --name sits next to any built-in speakers; its
README.md card records the description, the designer and the thresholds. Last, a consistency report speaks
the same sentences untagged and with emotion tags through (a) the designer re-described per line and (b)
the locked speaker, and compares the spread of speaker similarity: the claim is (b) tighter than (a).
"""

EPILOG = """\
examples:
  qwen-tts-ext design-voice --config configs/design_voice.yaml --designer Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign \\
      --model Qwen/Qwen3-TTS-12Hz-1.7B-Base --description "A deep, raspy voice of a tired cowboy." \\
      --name cowboy --output runs/cowboy
  # a CustomVoice checkpoint keeps its built-in speakers; data prep borrows the Base speaker encoder
  qwen-tts-ext design-voice ... --model Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice \\
      --speaker-encoder Qwen/Qwen3-TTS-12Hz-1.7B-Base
  # more takes, a stricter identity filter, a longer SFT, German sentences
  qwen-tts-ext design-voice ... render.takes=4 filter.max_distance=0.08 sft.train.max_steps=600 --language german

Output (--output, new or empty): takes/ (WAVs, takes.jsonl), selection/ (scores.jsonl, kept.jsonl,
rejects.jsonl in data prep's format: row, path, reason, message), prepared/, run/ (the SFT run;
run/export is the checkpoint, with README.md and design.json), report/ (consistency.md/json + clips),
design.json. stdout: the export path, the kept count and the report path; logs and progress on stderr.
exit status: 0 success, 2 user error (bad arguments, missing inputs, output in the way, too few takes kept),
130 interrupted.
"""

COMMAND = Command(
    name="design-voice", description=DESCRIPTION, epilog=EPILOG, config=DesignConfig,
    run="qwen_tts_ext.design.pipeline:run",
    options=[
        Option("designer", "--designer", "a Qwen3-TTS VoiceDesign checkpoint (folder or hub id)",
               metavar="VOICEDESIGN_CKPT"),
        Option("model", "--model", "the checkpoint to lock the voice into: Base or CustomVoice", metavar="CKPT"),
        Option("speaker_encoder", "--speaker-encoder", "a Base checkpoint for data prep's x-vectors (needed when "
               "--model is CustomVoice)", metavar="BASE_CKPT"),
        Option("description", "--description", "the voice in words", metavar="TEXT"),
        Option("name", "--name", "the new speaker's name (lower-cased)", metavar="NAME"),
        Option("output", "--output", "output folder, new or empty", metavar="DIR"),
        Option("overwrite", "--overwrite", "replace a previous output of this command at --output", switch=True),
        Option("render.language", "--language", "language of the takes (picks the shipped sentence list)"),
        Option("render.sentences", "--sentences", "your own sentences, one a line", metavar="FILE"),
        Option("render.takes", "--takes", "seeds per sentence", metavar="N"),
        Option("render.num_sentences", "--num-sentences", "sentences rendered (0: all)", metavar="N"),
        Option("sft_recipe", "--sft-recipe", "the SFT recipe (configs/sft_*.yaml)", metavar="YAML"),
        Option("device", "--device", "cpu, cuda, cuda:N, mps or auto"),
        Option("dtype", "--dtype", "auto, float32, bfloat16 or float16 (rendering and the report)"),
        Option("progress", "--quiet", "no progress bars", switch=False),
    ],
)


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
