"""``qwen-tts-ext search`` / ``python finetuning/darwin_search.py``: the Darwin genome search (CMA-ES)."""

from __future__ import annotations

from qwen_tts_ext.blend.search_config import SEARCH_ALIASES, SearchConfig
from qwen_tts_ext.command import Command, Option

DESCRIPTION = """\
Darwin genome search: find per-layer blend ratios for the talker by CMA-ES, judged by measured speech.

The genome has one ratio per talker layer (genome.per_projection: per layer and gate/up/down), each in
[0, genome.alpha_max] (default 0.08); frozen layers are pinned at 0. With genome.mri_prior a prior per layer
from the parents' MRI statistics is mixed in through a searched trust gene:
    ratio = trust x MRI ratio + (1 - trust) x genome ratio.
The model is loaded once; every candidate is blended in memory from the original weights (no checkpoint
per candidate), speaks fixed sentences and seeds plus one sentence per emotion tag, and is scored by a
weighted composite of the offline judges, each term normalised against alpha 0 (see
qwen_tts_ext/blend/search_fitness.py). A candidate with any segment at the frame cap fails hard.

Every evaluation is journaled (journal.jsonl, fsync per line) and cached by a hash of the rounded genome:
a search killed even with kill -9 continues with --resume, measures nothing twice, and ends with the same
best genome as an uninterrupted run. It writes best_genome.yaml (darwin_blend.py --config reads it as it
is), search.md / search.json / search.png (per-layer bars, fitness over evaluations, top-k, best vs flat
3% vs alpha 0) into --output, and with --blend OUT the best checkpoint.
"""

EPILOG = """\
examples:
  qwen-tts-ext search --config configs/search.yaml --model runs/v1/export --speaker alice \\
      --llm Qwen3-1.7B --output runs/v1-search
  # protect the first layers, search gate/up/down separately, MRI prior with a searched trust
  qwen-tts-ext search --config configs/search.yaml ... freeze_layers=0-3 per_projection=true mri_prior=true
  # small budget, then write the best checkpoint
  qwen-tts-ext search ... --budget 48 --population 8 --blend runs/v1-darwin-searched
  # after a crash or kill -9: the same command plus --resume
  qwen-tts-ext search --config configs/search.yaml ... --resume
  # blend the result later
  python finetuning/darwin_blend.py --config runs/v1-search/best_genome.yaml --output runs/v1-darwin

Keys of the groups may be given short (budget=48, alpha_max=0.06, freeze_layers=0-3, sentences=[...]);
`seed` is ambiguous: write synthesis.seed or optimizer.seed.
The result lines go to stdout; logs and the progress bar (evaluations, best fitness, seconds per
evaluation) to stderr. --output must be new or empty, or this command's previous run with --resume
(continue) or --overwrite (start over; removes only this command's own files).
exit status: 0 success, 2 user error (bad settings, wrong checkpoint, incompatible LLM, folder in the way,
alpha 0 already running away), 130 interrupted (resume with --resume).
"""

COMMAND = Command(
    name="search", description=DESCRIPTION, epilog=EPILOG, config=SearchConfig,
    run="qwen_tts_ext.blend.search:run", aliases=SEARCH_ALIASES,
    options=[
        Option("runtime.model", "--model", "Qwen3-TTS checkpoint folder (custom_voice or base)", metavar="DIR"),
        Option("llm", "--llm", "Qwen3 LLM whose FFNs are blended in (the talker's backbone)", metavar="DIR"),
        Option("output", ("--output", "-o"), "run folder: journal, best_genome.yaml, search.md/json/png",
               metavar="DIR"),
        Option("blend", "--blend", "also write the best genome's blended checkpoint to this folder", metavar="DIR"),
        Option("voice.speaker", "--speaker", "speaker (custom_voice) or name in --speakers-file (base)"),
        Option("voice.ref_audio", "--ref-audio", "reference clip: the voice of a Base checkpoint", metavar="WAV"),
        Option("voice.speakers_file", "--speakers-file", "speakers.safetensors from data prep", metavar="FILE"),
        Option("synthesis.language", "--language", "language or auto"),
        Option("genome.alpha_max", "--alpha-max", "upper bound of every gene (default 0.08)", metavar="X"),
        Option("genome.freeze_layers", "--freeze-layers", "layers pinned at 0, e.g. 0,1 or 0-3,27", metavar="LAYERS"),
        Option("genome.per_projection", "--per-projection", "one gene per layer and projection", switch=True),
        Option("genome.mri_prior", "--mri-prior", "mix an MRI prior in through a searched trust gene", switch=True),
        Option("optimizer.population", "--population", "CMA-ES population (default 8)", metavar="N"),
        Option("optimizer.sigma0", "--sigma0", "initial step as a fraction of the gene range (default 0.25)",
               metavar="X"),
        Option("optimizer.budget", "--budget", "candidate evaluations (whole generations; default 96)", metavar="N"),
        Option("optimizer.seed", "--seed", "CMA-ES seed (default 1)"),
        Option("fitness.judges", "--judges", "offline judges, comma-separated (default speaker,distillmos,dnsmos,asr;"
               " '' for none)", metavar="LIST"),
        Option("resume", "--resume", "continue the unfinished search in --output", switch=True),
        Option("overwrite", "--overwrite", "start over in a previous search's folder", switch=True),
        Option("runtime.device", "--device", "cpu, cuda, cuda:N, mps or auto"),
        Option("runtime.dtype", "--dtype", "float32, bfloat16, float16 or auto"),
    ],
)


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
