"""``qwen-tts-ext evaluate`` / ``python scripts/evaluate.py``: the Darwin alpha sweep."""

from __future__ import annotations

from qwen_tts_ext.command import Command, Option
from qwen_tts_ext.evaluation.config import EVALUATE_ALIASES, EvaluateConfig

DESCRIPTION = """\
Darwin alpha sweep: for each alpha, blend the LLM's FFNs into the loaded TTS model in memory, synthesize
test sentences and a tagged script, and measure the share of utterances that stop by EOS before the frame
cap, mean duration relative to alpha 0, speaker similarity, identity drift across segments and the
real-time factor, and scores every test sentence with the offline judges (--judges: independent speaker
similarity to --ref-audio, MOS, speaking rate and truncation, WER/CER). Writes sweep.md / sweep.json / sweep.png into --out-dir and
recommends the largest alpha whose stop rate and similarity stay within tolerance of alpha 0.

Everything that can be checked without a model is checked first (what each folder is, that the LLM fits
the talker, the voice, the report folder, the device), so a mistake costs seconds, not a sweep.
"""

EPILOG = """\
examples:
  qwen-tts-ext evaluate --model ckpt/alice-locked --speaker alice --llm Qwen3-1.7B \\
      --speaker-encoder Qwen3-TTS-12Hz-1.7B-Base --ref-audio alice_ref.wav
  qwen-tts-ext evaluate --model Qwen3-TTS-12Hz-1.7B-Base --ref-audio me.wav --llm Qwen3-1.7B \\
      --alphas 0,0.02,0.04 --sentences-file sentences.txt --asr whisper-small/
  # settings from YAML, overridden on the command line (keys as in --config files)
  qwen-tts-ext evaluate --config sweep.yaml tolerances.stop=0.1 synthesis.cap_margin=1.5

Keys of the groups may be given short (seed=3, cap_margin=1.5, speaker: alice in a file, stop_tolerance=0.1),
as before the groups existed.

The table, the recommendation and the report's path go to stdout; logs and progress to stderr.
--out-dir (default outputs/alpha-sweep-<timestamp>) must be new or empty; --overwrite replaces only a
previous report of this command, never a folder holding anything else.
exit status: 0 success, 2 user error (bad arguments, wrong checkpoint, incompatible LLM, output in the way),
130 interrupted.
"""

COMMAND = Command(
    name="evaluate", description=DESCRIPTION, epilog=EPILOG, config=EvaluateConfig,
    run="qwen_tts_ext.evaluation.pipeline:run", aliases=EVALUATE_ALIASES,
    options=[
        Option("runtime.model", "--model", "Qwen3-TTS checkpoint folder (custom_voice or base)", metavar="DIR"),
        Option("llm", "--llm", "Qwen3 LLM checkpoint blended in for alphas > 0 (the talker's backbone)", metavar="DIR"),
        Option("alphas", "--alphas", "comma-separated alphas in [0, 1] (default 0,0.01,0.03,0.05,0.1; 0 is always "
               "added)", metavar="LIST"),
        Option("sentences_file", "--sentences-file", "test sentences, one per line (default: 6 built-in)",
               metavar="FILE"),
        Option("script", "--script", "tagged script for the identity-drift measurement ('' for none)"),
        Option("voice.speaker", "--speaker", "speaker (custom_voice) or name in --speakers-file (base)"),
        Option("voice.ref_audio", "--ref-audio", "reference clip: the voice for Base checkpoints and the "
               "similarity reference", metavar="WAV"),
        Option("voice.speakers_file", "--speakers-file", "speakers.safetensors from data prep (name -> x-vector)",
               metavar="FILE"),
        Option("speaker_encoder", "--speaker-encoder", "Base checkpoint whose speaker encoder measures similarity "
               "(default: --model if it is a Base checkpoint)", metavar="DIR"),
        Option("synthesis.language", "--language", "language or auto"),
        Option("synthesis.seed", "--seed", "base seed (sentence i uses seed + 1000*i at every alpha)"),
        Option("synthesis.do_sample", "--greedy", "greedy decoding", switch=False),
        Option("asr", "--asr", "local transformers ASR model folder: adds the character error rate", metavar="DIR"),
        Option("judges", "--judges", "offline judges scoring the test sentences, comma-separated (default "
               "speaker,distillmos,dnsmos,asr,timing; '' for none)", metavar="LIST"),
        Option("tolerances.stop", "--stop-tolerance", "allowed drop of the stop rate (default 0.05)", metavar="X"),
        Option("tolerances.similarity", "--similarity-tolerance", "allowed drop of similarity, ECAPA or the judges' "
               "spk_sim (default 0.05)",
               metavar="X"),
        Option("tolerances.cer", "--cer-tolerance", "allowed rise of the CER (default 0.05)", metavar="X"),
        Option("tolerances.min_stop_rate", "--min-stop-rate", "every alpha must stop by EOS at least this often "
               "(default 0.8)", metavar="X"),
        Option("out_dir", "--out-dir", "report folder, new or empty (default outputs/alpha-sweep-<timestamp>)",
               metavar="DIR"),
        Option("save_audio", "--save-audio", "also keep every generated WAV in <out-dir>/audio", switch=True),
        Option("overwrite", "--overwrite", "replace a previous report of this command at --out-dir", switch=True),
        Option("runtime.device", "--device", "cpu, cuda, cuda:N, mps or auto"),
        Option("runtime.dtype", "--dtype", "float32, bfloat16, float16 or auto"),
    ],
)


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
