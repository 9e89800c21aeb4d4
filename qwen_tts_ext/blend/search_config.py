"""``SearchConfig``: every setting of ``qwen-tts-ext search`` (the Darwin genome search; YAML keys = these names).

Groups: ``runtime`` / ``voice`` / ``synthesis`` (shared by every speaking command), ``genome`` (what is
searched), ``optimizer`` (CMA-ES), ``fitness`` (what is measured and how it is weighed). No torch import:
the config is built and checked before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from qwen_tts_ext.config import Share
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.synthesis.config import RuntimeRef, SynthesisOptions, VoiceRef

FLAT_ALPHA = 0.03  # the Darwin-TTS card's default: the "flat 3%" reference every search is compared with
DEFAULT_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please remember to water the plants while I'm away.",
    "It was a quiet evening, and the rain had just stopped.",
)
DEFAULT_EMOTIONS = ("neutral", "happy", "sad", "angry", "whispering")
DEFAULT_CONTRAST_SENTENCE = "I really did not expect to see you here today."
DEFAULT_JUDGES = ("speaker", "distillmos", "dnsmos", "asr")
# Weights of the composite fitness (blend/search_fitness.py documents each term). Keys: "contrast",
# "duration" and any judge metric (evaluation.judges.metric_info()); a metric no judge measured is skipped.
DEFAULT_WEIGHTS = {"contrast": 1.0, "duration": 1.0, "spk_sim": 1.0, "mos_distill": 0.5, "dnsmos_ovrl": 0.5,
                   "wer": 0.25, "cer": 0.25}


@dataclass
class GenomeConfig:
    """What is searched: one ratio per talker layer (or per layer and projection), bounded, some frozen."""

    alpha_max: Share = 0.08  # upper bound of every gene (10% is known to run away)
    start: float = FLAT_ALPHA  # the start point: every gene at this ratio (the card's flat 3%)
    per_projection: bool = False  # one gene per layer and projection (gate/up/down) instead of per layer
    freeze_layers: Any = field(default_factory=list)  # layers pinned at 0, e.g. [0, 1] or "0-3,27"
    tensors: list[str] = field(default_factory=lambda: ["gate", "up", "down"])  # projections that blend
    mri_prior: bool = False  # blend each layer's ratio with an MRI prior through a searched trust gene
    trust_start: float = 0.5  # the trust gene's start value (final = trust x MRI + (1 - trust) x genome)
    precision: float = 1e-4  # genes are rounded to this step; the fitness cache is keyed by the rounded genome

    def validate(self) -> None:
        problems = []
        if not 0 < self.alpha_max <= 1:
            problems.append(f"genome.alpha_max must be in (0, 1], got {self.alpha_max}")
        if not 0 <= self.start <= self.alpha_max:
            problems.append(f"genome.start must be in [0, alpha_max={self.alpha_max}], got {self.start}")
        if not 0 <= self.trust_start <= 1:
            problems.append(f"genome.trust_start must be in [0, 1], got {self.trust_start}")
        if not 0 < self.precision <= 0.01:
            problems.append(f"genome.precision must be in (0, 0.01], got {self.precision}")
        try:
            from qwen_tts_ext.blend.plan import parse_layers, parse_tensors

            parse_layers(self.freeze_layers, None, "genome.freeze_layers")
            parse_tensors(self.tensors)
        except UserError as exc:
            problems.append(exc)
        UserError.collect(problems)


@dataclass
class OptimizerConfig:
    """CMA-ES (pycma ``cma`` 4.5, ask/tell) settings."""

    population: int = 8  # candidates per generation
    sigma0: float = 0.25  # initial step, as a fraction of [0, alpha_max] (and of the trust range [0, 1])
    budget: int = 96  # candidate evaluations (whole generations: rounded down to a multiple of population)
    seed: int = 1  # CMA-ES sampling seed (same seed + same fitness -> same search)

    def validate(self) -> None:
        problems = []
        if self.population < 2:
            problems.append(f"optimizer.population must be >= 2, got {self.population}")
        if not 0 < self.sigma0 <= 1:
            problems.append(f"optimizer.sigma0 must be in (0, 1] (a fraction of the gene range), got {self.sigma0}")
        if self.budget < max(self.population, 1):
            problems.append(f"optimizer.budget ({self.budget}) must be at least one generation "
                            f"(population {self.population})")
        if self.seed < 1:
            problems.append(f"optimizer.seed must be >= 1 (pycma reads 0 as 'random'), got {self.seed}")
        UserError.collect(problems)


@dataclass
class FitnessConfig:
    """What every candidate speaks, which judges score it and how the composite weighs them."""

    sentences: list[str] = field(default_factory=lambda: list(DEFAULT_SENTENCES))  # plain test sentences
    seeds: list[int] = field(default_factory=lambda: [0])  # each sentence is spoken once per seed
    emotions: list[str] = field(default_factory=lambda: list(DEFAULT_EMOTIONS))  # tags rendering contrast_sentence
    contrast_sentence: str = DEFAULT_CONTRAST_SENTENCE  # spoken once per emotion tag ([] emotions: no contrast)
    judges: list[str] = field(default_factory=lambda: list(DEFAULT_JUDGES))  # offline judges ([] = none)
    asr: str = ""  # local transformers ASR folder for the asr judge (any language); "" = pocketsphinx (English)
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    top_rows: int = 5  # rows of the top-k table in search.md

    def validate(self) -> None:
        problems: list[Any] = []
        names = []
        for item in self.judges:
            names.extend(n.strip().lower() for n in str(item).split(",") if n.strip())
        self.judges = list(dict.fromkeys(names))
        if not self.sentences or any(not str(s).strip() for s in self.sentences):
            problems.append("fitness.sentences: give at least one non-empty sentence")
        if not self.seeds:
            problems.append("fitness.seeds: give at least one seed")
        if len(self.emotions) == 1:
            problems.append("fitness.emotions: contrast needs at least two tags (or [] for none)")
        if self.emotions and not self.contrast_sentence.strip():
            problems.append("fitness.contrast_sentence is empty")
        if self.top_rows < 1:
            problems.append(f"fitness.top_rows must be >= 1, got {self.top_rows}")
        from qwen_tts_ext.synthesis.tags import parse_script

        scripts = [("sentences", str(s)) for s in self.sentences if str(s).strip()]
        scripts += [("emotions", f"[{tag}] {self.contrast_sentence}") for tag in self.emotions]
        for where, text in scripts:
            try:
                parse_script(text)
            except UserError as exc:
                problems.append(UserError(*(f"fitness.{where}: {text!r}: {p}" for p in exc.problems)))
        from qwen_tts_ext.blend.search_fitness import check_weights

        problems.extend(check_weights(self.weights))
        UserError.collect(problems)


@dataclass
class SearchConfig:
    """Settings of ``qwen-tts-ext search`` (YAML keys = these names; CLI flags map onto them)."""

    runtime: RuntimeRef = field(default_factory=RuntimeRef)  # --model, --device, --dtype
    voice: VoiceRef = field(default_factory=VoiceRef)  # --speaker, --ref-audio, --speakers-file
    synthesis: SynthesisOptions = field(default_factory=SynthesisOptions)  # language, seed, sampling, caps
    llm: str = ""  # Qwen3 LLM whose FFNs are blended in (the talker's backbone)
    output: str = ""  # run folder: journal.jsonl, best_genome.yaml, search.md/json/png
    blend: str = ""  # also write the best genome's blended checkpoint here
    genome: GenomeConfig = field(default_factory=GenomeConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    fitness: FitnessConfig = field(default_factory=FitnessConfig)
    resume: bool = False  # continue the unfinished search in `output` (after a crash or kill -9)
    overwrite: bool = False  # start over in a previous search's folder (only its own files are removed)

    def check(self) -> None:
        problems = []
        if not self.runtime.model:
            problems.append("no model: pass --model CHECKPOINT_DIR (a Qwen3-TTS custom_voice or base checkpoint)")
        if not self.llm:
            problems.append("no LLM: pass --llm DIR (the Qwen3 causal LM whose FFNs are blended in)")
        if not self.output:
            problems.append("no run folder: pass --output DIR (journal, best_genome.yaml, search.md)")
        if self.resume and self.overwrite:
            problems.append("--resume continues a search and --overwrite starts it over: give one")
        UserError.collect(problems)

    def search_settings(self) -> dict[str, Any]:
        """The settings a journal is only valid for (a resume with other values is refused)."""
        from qwen_tts_ext.config import config_to_dict

        d = config_to_dict(self)
        for k in ("output", "blend", "resume", "overwrite"):
            d.pop(k, None)
        d["runtime"].pop("device", None)
        d["fitness"].pop("top_rows", None)
        return d


_GROUPS = (("runtime", RuntimeRef), ("voice", VoiceRef), ("synthesis", SynthesisOptions), ("genome", GenomeConfig),
           ("optimizer", OptimizerConfig), ("fitness", FitnessConfig))
_NAMES = [f.name for _, cls in _GROUPS for f in fields(cls)]
# Short keys (``budget=48``, ``alpha_max: 0.06`` at the top of a file); a name two groups share (``seed``) has none.
SEARCH_ALIASES = {f.name: f"{group}.{f.name}" for group, cls in _GROUPS for f in fields(cls) if _NAMES.count(f.name) == 1}
