"""``qwen-tts-ext synthesize`` / ``python scripts/synthesize.py``: speak a tagged script in one voice."""

from __future__ import annotations

from qwen_tts_ext.command import Command, Option
from qwen_tts_ext.synthesis.config import SYNTHESIZE_ALIASES, SynthesizeConfig

DESCRIPTION = """\
Speak a script with inline emotion tags ([Whispering] ... [Angry] ...) in one consistent voice. Each tag
starts a segment rendered with the tag's instruction (configs/emotions.yaml; unknown tags are used as
free-text instructions); segments are crossfaded into one 24 kHz WAV with a JSON sidecar. Every segment's
length is capped from its text, and a segment that hits the cap is reported as a stop-signal failure.

Everything that needs no weights is checked before the model loads: the script, the model folder (from
its config.json), the device, the output path, the speaker, the language and the --llm of --alpha.
"""

EPILOG = """\
examples:
  qwen-tts-ext synthesize --model ckpt/alice-locked --speaker alice \\
      "[Whispering] Don't wake him. [Angry] Why would you do that? [Excited] We won!"
  qwen-tts-ext synthesize --model Qwen3-TTS-12Hz-1.7B-Base --ref-audio me.wav --script-file story.txt
  qwen-tts-ext synthesize --config synth.yaml alpha=0.03 llm=Qwen3-1.7B seed=7

KEY=VALUE overrides take the config keys (synthesis.seed=3) or their short names (seed=3 cap_margin=3).
The result line (`wrote ...`) is the only output on stdout. --overwrite replaces only a WAV whose sidecar
says this suite wrote it. exit status: 0 ok, 2 user error (one line, nothing written), 3 written but a
segment hit its frame cap without EOS (--allow-cap-hits for 0), 130 interrupted.
"""

M, T, S, B = "model and voice", "text", "sampling", "bounds and output"
COMMAND = Command(
    name="synthesize", prog="qwen-tts-ext synthesize", description=DESCRIPTION, epilog=EPILOG,
    config=SynthesizeConfig, run="qwen_tts_ext.synthesis.synthesize:run", text_key="text",
    aliases=SYNTHESIZE_ALIASES,
    options=[
        Option("runtime.model", "--model", "Qwen3-TTS checkpoint folder (custom_voice or base)", group=M),
        Option("voice.speaker", "--speaker", "speaker of a custom_voice checkpoint, or a name in --speakers-file", group=M),
        Option("voice.ref_audio", "--ref-audio", "Base checkpoint: reference clip whose x-vector is the voice", group=M),
        Option("voice.speakers_file", "--speakers-file", "Base checkpoint: speakers.safetensors (name -> x-vector)",
               group=M),
        Option("synthesis.language", "--language", "language name or 'auto' (default auto)", group=M),
        Option("alpha", "--alpha", "runtime Darwin blend weight of the LLM FFNs (0 = off; 0.03 typical)", group=M),
        Option("llm", "--llm", "Qwen3 LLM checkpoint for --alpha", group=M),
        Option("emotions", "--emotions", "tag -> instruction YAML (default configs/emotions.yaml)", group=M),
        Option("runtime.device", "--device", "cpu, cuda, cuda:N, mps or auto (default cpu)", group=M),
        Option("runtime.dtype", "--dtype", "float32, bfloat16, float16 or auto (bfloat16 on GPU, float32 on CPU)",
               group=M),
        Option("text", ("--text", "-t"), "the tagged script", group=T),
        Option("script_file", "--script-file", "read the tagged script from a UTF-8 text file", group=T),
        Option("synthesis.seed", "--seed", "base seed; segment i uses seed+i (default 0)", group=S),
        Option("synthesis.do_sample", "--greedy", "greedy decoding instead of sampling", switch=False, group=S),
        Option("synthesis.temperature", "--temperature", "sampling temperature (default: the checkpoint's)", group=S),
        Option("synthesis.top_k", "--top-k", "top-k (default: the checkpoint's generation_config)", group=S),
        Option("synthesis.top_p", "--top-p", "top-p (default: the checkpoint's generation_config)", group=S),
        Option("synthesis.repetition_penalty", "--repetition-penalty", "repetition penalty", group=S),
        Option("synthesis.cap_margin", "--cap-margin", "frame cap = margin x expected speech + slack (default 2)",
               group=B),
        Option("synthesis.cap_slack_seconds", "--cap-slack-seconds", "the slack of the frame cap (default 3)", group=B),
        Option("synthesis.max_segment_seconds", "--max-segment-seconds", "hard cap per segment (default 120)", group=B),
        Option("synthesis.crossfade_ms", "--crossfade-ms", "crossfade between segments (default 40)", group=B),
        Option("out", ("--out", "-o"), "output WAV path (default: a timestamped file in --out-dir)", group=B),
        Option("out_dir", "--out-dir", "folder for timestamped outputs (default outputs/)", group=B),
        Option("overwrite", "--overwrite", "replace an existing --out that this suite wrote", switch=True, group=B),
        Option("strict", "--strict", "treat warnings (unknown tags, ignored instructions) as errors", switch=True,
               group=B),
        Option("allow_cap_hits", "--allow-cap-hits", "exit 0 even if a segment hit its cap", switch=True, group=B),
    ],
)


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
