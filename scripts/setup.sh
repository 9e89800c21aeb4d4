#!/usr/bin/env bash
# Idempotent setup: Debian packages where possible, a project venv (.venv) from requirements.lock,
# and the package installed editable. Safe to re-run; pip runs only when the pins change.
#   WITH_BROWSER=1 also installs Debian's chromium (for the studio's browser test).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null) \
      || echo "[setup] warning: could not install ${missing[*]}; tests that need them fall back or skip"
  else
    echo "[setup] warning: ${missing[*]} not installed (need root + apt-get); tests that need them fall back or skip"
  fi
}

pkgs=(espeak-ng sox libsndfile1)
[ "${WITH_BROWSER:-0}" = 1 ] && pkgs+=(chromium)
apt_install "${pkgs[@]}"

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
want="$(cat requirements.lock requirements-nodeps.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
stamp=.venv/.qwen_tts_ext-installed
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "[setup] installing pinned requirements (first run downloads torch; a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q -r requirements.lock 2>&1 | grep -v "is ignored" || true
  # resemblyzer without its declared deps: its `webrtcvad` sdist needs a C compiler; webrtcvad-wheels provides it
  .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.lock 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q --no-deps -e . 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import qwen_tts, qwen_tts_ext, torch, torchaudio" 2>/dev/null \
    || { echo "[setup] error: the environment does not import (see pip output above)"; exit 1; }
  echo "$want" > "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
