"""``python -m evoq_data.serve``: kept as the short name of
:mod:`evoq_data.generation.serve` (vLLM's OpenAI-compatible server on CPU)."""

from evoq_data.generation.serve import main

if __name__ == "__main__":
    main()
