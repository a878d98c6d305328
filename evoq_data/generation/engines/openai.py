"""The ``openai`` engine: any OpenAI-compatible chat endpoint (``vllm serve``, SGLang, ...).

One ``POST {base_url}/chat/completions`` per :class:`GenRequest`: one user message with the
images as base64 data URLs in shown order, then the prompt text, and ``n``, ``seed``,
``temperature``, ``top_p``, ``max_tokens``. vLLM's server seeds choice ``i`` with
``seed + i``, as the offline engine does. Up to ``concurrency`` requests are in flight at
once (a thread pool over one HTTP client). Connection errors, timeouts, HTTP 429 and 5xx
are retried with exponential backoff and jitter (honouring ``Retry-After``); after
``max_retries`` retries, or on any other HTTP error, the run stops with one line naming the URL
and the status. The API key comes from ``OPENAI_API_KEY`` and is sent as a Bearer token only.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from evoq_data.core.errors import EvoqError
from evoq_data.generation.engines import GenRequest, Sampling, read_image_bytes

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


def image_data_url(path: str, expected_id: str | None = None) -> str:
    """A ``data:`` URL of what the judge sees: the file itself when it is upright 8-bit RGB
    JPEG/PNG/WebP, else a lossless PNG of the decoded pixels (EXIF orientation applied,
    16-bit scaled, alpha over white; :mod:`evoq_data.images.decode`), the same pixels the
    local engines see. A server decoding the file itself would skip the EXIF rotation."""
    from evoq_data.images.decode import PASS_THROUGH_FORMATS, decode, needs_normalising, png_bytes

    data = read_image_bytes(path, expected_id)
    try:
        if needs_normalising(data) is None:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                mime = PASS_THROUGH_FORMATS[im.format]
        else:
            data, mime = png_bytes(decode(data, max_pixels=2**62)), "image/png"
    except (OSError, ValueError) as exc:
        raise EvoqError(f"cannot read image {path}: {exc}") from exc
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _split_credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """``http://user:secret@host/v1`` -> (``http://host/v1``, basic auth); else (url, None)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    auth = httpx.BasicAuth(unquote(user), unquote(password))
    return urlunsplit(parts._replace(netloc=host)), auth


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        detail = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        text = str(detail)
    except ValueError:
        text = response.text
    return " ".join(text.split())[:300]


class OpenAIEngine:
    name = "openai"

    def __init__(self, model: str | None, *, base_url: str, concurrency: int = 8,
                 model_revision: str = "unknown", revision: str | None = None,
                 max_retries: int = 5, timeout: float = 600.0, backoff: float = 1.0,
                 max_backoff: float = 60.0, extra_body: dict | None = None) -> None:
        if concurrency < 1:
            raise EvoqError(f"--concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise EvoqError(f"max_retries must be at least 0, got {max_retries}")
        # user:password@ in the URL (it may hold a key) becomes HTTP basic auth, so that the
        # URL in messages and logs (ours and httpx's) carries no secret
        self.base_url, auth = _split_credentials(base_url.rstrip("/"))
        self.concurrency = concurrency
        self.model_revision = model_revision
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.extra_body = dict(extra_body or {})
        headers = {}
        if key := os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(
            headers=headers, auth=auth,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            limits=httpx.Limits(max_connections=concurrency,
                                max_keepalive_connections=concurrency),
        )
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # streaming: started at the first submit
        self._futures: dict = {}  # streaming: id -> future of its answers
        self._next_id = 0
        self.model = model or self._first_model()

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """Send with retries; return a 2xx response or raise EvoqError."""
        url = f"{self.base_url}{path}"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = self.client.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{exc.__class__.__name__}: {exc}"
            else:
                if response.is_success:
                    return response
                problem = f"HTTP {response.status_code}: {_error_detail(response)}"
                if response.status_code not in RETRY_STATUS:
                    raise EvoqError(f"{method} {url} failed with {problem}")
                retry_after = response.headers.get("retry-after")
            if attempt == self.max_retries:
                break
            delay = self._delay(attempt, retry_after)
            log.warning("%s %s: %s; retry %d/%d in %.2fs", method, url, problem, attempt + 1,
                        self.max_retries, delay)
            time.sleep(delay)
        raise EvoqError(f"{method} {url} failed after {self.max_retries + 1} attempts; "
                        f"last: {problem}")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Exponential backoff with jitter, or the server's Retry-After (both capped)."""
        if retry_after is not None:
            try:
                return min(self.max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        with self._rng_lock:
            jitter = self._rng.uniform(0.5, 1.5)
        return min(self.max_backoff, self.backoff * 2**attempt) * jitter

    def _first_model(self) -> str:
        data = self._request("GET", "/models").json().get("data") or []
        if not data or "id" not in data[0]:
            raise EvoqError(f"{self.base_url}/models lists no model; pass --model")
        log.info("using model %s served at %s", data[0]["id"], self.base_url)
        return data[0]["id"]

    def _one(self, req: GenRequest, sampling: Sampling) -> list[str]:
        ids = req.image_ids or (None,) * len(req.images)
        content = [{"type": "image_url", "image_url": {"url": image_data_url(p, i)}}
                   for p, i in zip(req.images, ids, strict=True)]
        content.append({"type": "text", "text": req.prompt.text})
        greedy = sampling.temperature == 0  # one greedy answer stands for all n
        body = {
            **self.extra_body, "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "n": 1 if greedy else req.n, "seed": req.seed,
            "temperature": sampling.temperature, "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        reply = self._request("POST", "/chat/completions", json=body).json()
        choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
        texts = [(c.get("message") or {}).get("content") or "" for c in choices]
        if greedy and len(texts) == 1:
            texts = texts * req.n
        if len(texts) != req.n:
            raise EvoqError(f"{self.base_url}/chat/completions returned {len(texts)} answers "
                            f"for n={req.n} (request {req.key or req.seed}); the endpoint must "
                            "support n")
        return texts

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[list[str]]:
        if len(requests) <= 1 or self.concurrency == 1:
            return [self._one(r, sampling) for r in requests]
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)),
                                  thread_name_prefix="evoq-openai")
        try:
            futures = [pool.submit(self._one, r, sampling) for r in requests]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # The streaming entry points (``evoq-data vote --schedule streaming``): each request is
    # sent on its own thread as soon as it is submitted, ``concurrency`` at a time; ``poll``
    # waits for the first to come back, so a pair's next wave is asked while the others'
    # answers are still being written.

    def wants_more(self) -> bool:
        """Whether fewer requests are out than twice ``concurrency`` (one waiting behind
        each that is being answered)."""
        return len(self._futures) < 2 * self.concurrency

    def submit(self, requests: list[GenRequest], sampling: Sampling) -> list[str]:
        """Send ``requests`` without waiting; their ids, for :meth:`poll`."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                            thread_name_prefix="evoq-openai")
        ids = []
        for req in requests:
            rid = str(self._next_id)
            self._next_id += 1
            self._futures[rid] = self._pool.submit(self._one, req, sampling)
            ids.append(rid)
        return ids

    def poll(self) -> list[tuple[str, list[str]]]:
        """Wait until one request at least is answered; (id, its ``n`` answers) of each that
        is (a failed request raises its error here)."""
        from concurrent.futures import FIRST_COMPLETED, wait

        futures = self._futures
        if not futures:
            return []
        done, _ = wait(futures.values(), return_when=FIRST_COMPLETED)
        finished = [rid for rid, f in futures.items() if f in done]
        return [(rid, futures.pop(rid).result()) for rid in finished]

    def close(self) -> None:
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()
