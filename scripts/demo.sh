#!/usr/bin/env bash
# Set up (if needed) and run the end-to-end demo on tiny checkpoints: prep -> SFT -> lock -> blend -> speak.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
exec .venv/bin/python scripts/demo.py "$@"
