"""Keep stdout for results: what the engines' libraries print goes to stderr.

``evoq-data vote`` and ``score`` print their summary as JSON on stdout, to be piped into
``jq`` or read by a script. vLLM logs to stdout by default (its ``VLLM_LOGGING_STREAM``),
and other libraries print there too, from Python or from native code, in this process or
in worker processes it starts. :func:`stdout_to_stderr` points file descriptor 1 at
stderr's file while the engine loads and runs, so all of that lands on stderr, whoever
writes it; the command prints its summary after the block, on the real stdout.
:func:`stderr_silenced` does the same to stderr, for ``--quiet`` around a library whose
native code logs there (Ray's core worker; Ray keeps those lines in its session logs).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed or detached stream: nothing to flush
            pass


@contextmanager
def _pointed(fd: int, target: int):
    """Within the block, what is written to descriptor ``fd`` goes to ``target``."""
    _flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (a daemon): nothing to redirect
        yield
        return
    try:
        os.dup2(target, fd)
        yield
    finally:
        _flush()
        os.dup2(saved, fd)
        os.close(saved)


@contextmanager
def stdout_to_stderr():
    """Within the block, everything written to file descriptor 1 goes to descriptor 2
    (Python's ``sys.stdout`` too, which writes to descriptor 1); restored on exit."""
    with _pointed(1, 2):
        yield


@contextmanager
def stderr_silenced(silence: bool = True):
    """With ``silence``, everything written to file descriptor 2 within the block is
    dropped; restored on exit (an error raised in the block is printed after it)."""
    if not silence:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with _pointed(2, devnull):
            yield
    finally:
        os.close(devnull)
