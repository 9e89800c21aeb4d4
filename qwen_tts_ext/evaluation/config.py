"""``EvaluateConfig``: every setting of ``qwen-tts-ext evaluate`` (YAML keys = these names; flags map onto them).

The model, voice and synthesis settings are the groups every speaking command shares
(``runtime``, ``voice``, ``synthesis`` from ``qwen_tts_ext.synthesis.config``); the rest belongs
to the sweep. No torch import here: the config is built and checked before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from qwen_tts_ext.config import Share
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.evaluation.recommend import Tolerances
from qwen_tts_ext.synthesis.config import RuntimeRef, SynthesisOptions, VoiceRef

# The sweep's defaults (sweep.py re-exports them; kept here so parsing never imports numpy or torch).
DEFAULT_ALPHAS = (0.0, 0.01, 0.03, 0.05, 0.10)
DEFAULT_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "I can't believe you did that without asking me first.",
    "Please remember to water the plants while I'm away.",
    "We finally won the championship after ten long years!",
    "Could you tell me the way to the nearest train station?",
    "It was a quiet evening, and the rain had just stopped.",
)
# The offline judges (``evaluation.judges``) that score every alpha's test sentences by default; one whose
# package is missing is skipped with its install line in the report's notes. ``judges: []`` turns them off.
DEFAULT_JUDGES = ("speaker", "distillmos", "dnsmos", "asr", "timing")
DEFAULT_SCRIPT = "[Whispering] Don't wake him. [Angry] Why would you do that? [Excited] We won! [Sad] It's over now."


@dataclass
class EvaluateConfig:
    """Settings of an alpha sweep (YAML keys = these names; CLI flags map onto them)."""

    runtime: RuntimeRef = field(default_factory=RuntimeRef)  # --model, --device, --dtype
    voice: VoiceRef = field(default_factory=VoiceRef)  # --speaker, --ref-audio, --speakers-file
    synthesis: SynthesisOptions = field(default_factory=SynthesisOptions)  # --language, --seed, --greedy, caps
    llm: str = ""  # Qwen3 LLM blended in for alphas > 0
    alphas: list[Share] = field(default_factory=lambda: list(DEFAULT_ALPHAS))  # 0 is always added
    sentences: list[str] = field(default_factory=list)  # test sentences (default: 6 built-in)
    sentences_file: str = ""  # test sentences, one per line (# comments); wins over `sentences`
    script: str = DEFAULT_SCRIPT  # tagged script for identity drift ("" = none)
    speaker_encoder: str = ""  # Base checkpoint whose speaker encoder measures similarity
    tolerances: Tolerances = field(default_factory=Tolerances)  # what "within tolerance of alpha 0" means
    asr: str = ""  # local transformers ASR model folder: adds CER (any language; the asr judge uses it)
    judges: list[str] = field(default_factory=lambda: list(DEFAULT_JUDGES))  # offline judges ([] = none)
    out_dir: str = ""  # report folder (default outputs/alpha-sweep-<timestamp>)
    save_audio: bool = False  # keep every generated WAV in <out_dir>/audio
    overwrite: bool = False  # replace this command's previous report at out_dir

    def validate(self) -> None:
        """Value checks (called when the config is built; every problem is reported at once)."""
        problems: list[str | UserError] = []
        names = []
        for item in self.judges:
            names.extend(n.strip().lower() for n in str(item).split(",") if n.strip())
        self.judges = list(dict.fromkeys(names))
        bad = [a for a in self.alphas if not 0.0 <= a <= 1.0]
        if bad:
            problems.append(f"alphas must be in [0, 1], got {', '.join(f'{a:g}' for a in bad)} "
                            "(the useful range is about 0.01-0.05)")
        if self.sentences_file:
            try:
                self.test_sentences()
            except UserError as exc:
                problems.append(exc)
        elif any(not str(s).strip() for s in self.sentences):
            problems.append("sentences: an empty test sentence; give text for each")
        if self.script.strip():
            from qwen_tts_ext.synthesis.tags import parse_script

            try:
                parse_script(self.script)
            except UserError as exc:
                problems.append(UserError(*(f"script: {p}" for p in exc.problems)))
        UserError.collect(problems)

    def check(self) -> None:
        """The required settings, once file, flags and overrides are merged."""
        problems = []
        if not self.runtime.model:
            problems.append("no model: pass --model CHECKPOINT_DIR (a Qwen3-TTS custom_voice or base checkpoint)")
        if any(a > 0 for a in self.alphas) and not self.llm:
            problems.append("alphas above 0 need --llm: the Qwen3 LLM checkpoint whose FFNs are blended in "
                            "(or --alphas 0 for the baseline alone)")
        UserError.collect(problems)

    @property
    def blended_alphas(self) -> list[float]:
        return sorted({float(a) for a in self.alphas if a > 0})

    def test_sentences(self) -> list[str]:
        if self.sentences_file:
            path = Path(self.sentences_file).expanduser()
            if not path.is_file():
                what = "is a folder" if path.is_dir() else "does not exist"
                raise UserError(f"sentences file {path} {what}; give a text file with one sentence per line")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise UserError(f"sentences file {path} is not UTF-8 text") from None
            sents = [ln.strip() for ln in text.splitlines()]
            sents = [s for s in sents if s and not s.startswith("#")]
            if not sents:
                raise UserError(f"sentences file {path} has no sentences (one per line)")
            return sents
        return list(self.sentences) or list(DEFAULT_SENTENCES)


# Short keys for overrides and the top of a --config file: the flat keys of the sweep's config before the
# groups existed (``seed=3``, ``cap_margin: 1.5``, ``stop_tolerance: 0.1``) keep working.
EVALUATE_ALIASES = {
    **{f.name: f"{group}.{f.name}" for group, cls in (("runtime", RuntimeRef), ("voice", VoiceRef),
                                                      ("synthesis", SynthesisOptions)) for f in fields(cls)},
    "stop_tolerance": "tolerances.stop",
    "similarity_tolerance": "tolerances.similarity",
    "cer_tolerance": "tolerances.cer",
    "min_stop_rate": "tolerances.min_stop_rate",
}
