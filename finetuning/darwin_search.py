"""Darwin genome search: per-layer blend ratios found by CMA-ES (see --help). Same as `qwen-tts-ext search`."""

from qwen_tts_ext.blend.search_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
