"""Benchmark the streaming Darwin blend: wall time and peak RSS vs the naive approach and the I/O floor.

    python scripts/bench_blend.py              # released sizes (~11 GB of temp files, a few minutes)
    python scripts/bench_blend.py --layers 4   # quick run
"""

from qwen_tts_ext.blend.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
