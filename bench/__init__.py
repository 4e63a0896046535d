"""gale's benchmarks: the real stack (local Ray head, bundled model, HTTP endpoint) against
the same engine in-process and Ray's own tools, each figure beside its reference.

- `python -m bench.serving` (`make bench-serving`): tokens/s at concurrency 1 and 8,
  batch size 1 and 8, endpoint and in-process; the batching gain and endpoint ratio.
- `python -m bench [--quick]` (`make bench`): every figure of the benchmark table,
  written to docs/benchmarks.json, docs/benchmarks.md and docs/benchmarks.png.
- `python -m bench.vllm_vs_serve` (`make bench-vllm`): gale's vLLM engine against
  `vllm serve` and the transformers engine, written to docs/vllm-vs-serve.md.

Each starts its own local Ray head in a throwaway GALE_HOME (devstack.py) and stops it
at the end. Engines are chosen by name (`--engine`), so a vLLM engine can be measured
the same way.
"""
