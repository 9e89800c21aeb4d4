"""Benchmark the streaming Darwin blend: wall time and peak RSS vs the naive approach and the I/O floor.

    python scripts/bench_blend.py                            # released 1.7B sizes (~11 GB of temp files, a few minutes)
    python scripts/bench_blend.py --layers 4                 # quick run (real width, 4 layers)
    python scripts/bench_blend.py --shape 0.6b --layers 2    # the 0.6B pair (Qwen3-TTS-12Hz-0.6B + Qwen3-0.6B)

The shapes come from qwen_tts_ext/released.py.
"""

from qwen_tts_ext.blend.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
