"""The ``transformers`` engine: Hugging Face ``generate`` on CPU or CUDA.

Each prompt's vision features and the KV cache of its tokens but the last are computed once
(:mod:`evoq_data.generation.engines.hf_prefix`) and every sample of it continues from a copy,
so ``n`` samples prefill the prompt once, not ``n`` times, and the waves of ``--stop`` reuse
the prefill of their first wave. The samples of a call are decoded together: the requests'
rows are packed, in request order, into ``generate`` calls of at most ``batch_size`` rows whose
prompts have the same length (no row is padded; a request larger than ``batch_size`` goes
alone). Each sample draws from its own random stream: sample
``i`` of a request seeded ``s`` uses a generator seeded ``s + i`` (:class:`PerSampleSampler`,
exact Gumbel-max sampling of the temperature- and top-p-processed distribution), so a sample
does not depend on how many others were asked with it. A request for samples ``j..j+m`` (seed
``s + j``) gives exactly samples ``j..j+m`` of the request for all of them, which is what
``--stop`` relies on; a killed and resumed run reproduces the votes of an uninterrupted one
exactly on CPU.

:meth:`TransformersEngine.answer_probs` (``--mode logprob``) runs one forward pass per
request and reads the logits of the tokens ``0`` and ``1`` at the first answer position.
"""

from __future__ import annotations

import logging

from evoq_data.core.errors import EvoqError, require
from evoq_data.generation.engines import DecodedImages, GenRequest, Sampling, answer_token_ids
from evoq_data.generation.engines.hf_prefix import Prefix, PrefixStore, expand_prefixes
from evoq_data.generation.modeling import load_model, load_processor
from evoq_data.generation.prompts import chat_messages

log = logging.getLogger(__name__)


class PerSampleSampler:
    """A logits processor that makes HF ``generate`` draw row ``i`` of a batch with its own
    generator (seeded ``seeds[i]``): Gumbel-max over the temperature- and top-p-processed
    logits, then every other token masked, so ``generate``'s own multinomial draw can only
    return the chosen token. The draw of row ``i`` at step ``t`` depends only on
    (seeds[i], t, its logits), never on the batch it shares."""

    def __init__(self, torch, seeds, temperature: float, top_p: float, device) -> None:
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        self.torch = torch
        self.warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1 else []
        if top_p < 1:
            self.warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
        self.generators = []
        for seed in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(seed)
            self.generators.append(g)

    def __call__(self, input_ids, scores):
        torch = self.torch
        logits = scores.float()
        for warper in self.warpers:
            logits = warper(input_ids, logits)
        vocab = logits.shape[-1]
        u = torch.stack([torch.rand(vocab, generator=g, device=logits.device)
                         for g in self.generators[: logits.shape[0]]])
        gumbel = -torch.log(-torch.log(u.clamp(min=1e-20, max=1 - 1e-7)))
        choice = (logits + gumbel).argmax(dim=-1, keepdim=True)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, choice, 0.0)


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EvoqError(f"engine transformers: batch_size must be a whole number >= 1, got "
                        f"{batch_size!r}")


class TransformersEngine:
    name = "transformers"

    def __init__(self, model: str, *, model_revision: str = "unknown", revision: str | None = None,
                 device: str = "auto", dtype: str = "auto", min_pixels: int | None = None,
                 max_pixels: int | None = None, attn_implementation: str | None = None,
                 batch_size: int = 64) -> None:
        _check_batch_size(batch_size)  # before the model loads
        self._setup(
            model, model_revision, batch_size,
            load_processor(model, revision=revision, min_pixels=min_pixels,
                           max_pixels=max_pixels),
            load_model(model, revision=revision, dtype=dtype, device=device,
                       attn_implementation=attn_implementation))

    @classmethod
    def from_loaded(cls, net, processor, *, model: str, model_revision: str = "unknown",
                    batch_size: int = 64) -> TransformersEngine:
        """An engine around a model and processor already in memory (a benchmark's
        random-weight model, say); everything else as a loaded checkpoint."""
        _check_batch_size(batch_size)
        engine = cls.__new__(cls)
        engine._setup(model, model_revision, batch_size, processor, net.eval())
        return engine

    def _setup(self, model, model_revision, batch_size, processor, net) -> None:
        self.torch = require("torch", "transformers")
        self.model = model
        self.model_revision = model_revision
        self.batch_size = batch_size
        self.processor = processor
        self.net = net
        self.device = next(self.net.parameters()).device
        self.prefixes = PrefixStore(self)
        self._images = DecodedImages()  # a pair's images, once for both shown orders

    def _inputs(self, request: GenRequest):
        images = self._images.load(request)
        messages = chat_messages(request.prompt, images)
        text = self.processor.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        inputs = self.processor(text=[text], images=images, return_tensors="pt")
        return inputs.to(self.device)

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[list[str]]:
        """Each request's ``n`` answers. Requests are taken in order; each waits in the open
        batch of its prompt length, which is decoded once it has ``batch_size`` rows, once
        ``batch_size`` prompts wait in all, and at the end."""
        do_sample = sampling.temperature > 0
        # Greedy decoding gives one answer; it is repeated n times (as vLLM does).
        rows = [req.n if do_sample else 1 for req in requests]
        outputs: list[list[str] | None] = [None] * len(requests)
        self.prefixes.start_call(requests)
        open_batches: dict[int, list[tuple[int, Prefix]]] = {}

        def flush(length: int) -> None:
            batch = open_batches.pop(length)
            texts = self._decode([p for _, p in batch], [rows[i] for i, _ in batch],
                                 [requests[i].seed for i, _ in batch], sampling)
            for (i, _), answers in zip(batch, texts, strict=True):
                outputs[i] = answers if do_sample else answers * requests[i].n

        for i, req in enumerate(requests):
            prefix = self.prefixes.get(req)
            batch = open_batches.get(prefix.length, [])
            if batch and sum(rows[j] for j, _ in batch) + rows[i] > self.batch_size:
                flush(prefix.length)
            open_batches.setdefault(prefix.length, []).append((i, prefix))
            if sum(len(b) for b in open_batches.values()) >= self.batch_size:
                for length in list(open_batches):
                    flush(length)
        for length in list(open_batches):
            flush(length)
        return outputs

    def _decode(self, prefixes: list[Prefix], rows: list[int], seeds: list[int],
                sampling: Sampling) -> list[list[str]]:
        """One ``generate`` call: ``rows[i]`` samples of prompt ``i`` (sample ``j`` seeded
        ``seeds[i] + j``), all continuing from the prompts' prefixes; answers per prompt."""
        from transformers import LogitsProcessorList

        torch = self.torch
        tok = self.processor.tokenizer
        ids, position_ids, cache = expand_prefixes(torch, prefixes, rows, self.net.config)
        do_sample = sampling.temperature > 0
        gen_kwargs = dict(max_new_tokens=sampling.max_tokens, do_sample=do_sample,
                          pad_token_id=tok.pad_token_id, attention_mask=torch.ones_like(ids),
                          position_ids=position_ids, past_key_values=cache)
        if do_sample:
            # temperature and top-p act inside the per-sample sampler; generate's own
            # warpers are off and its multinomial sees one allowed token per row
            row_seeds = [s + j for s, n in zip(seeds, rows, strict=True) for j in range(n)]
            sampler = PerSampleSampler(torch, row_seeds, sampling.temperature, sampling.top_p,
                                       self.device)
            gen_kwargs.update(temperature=1.0, top_p=1.0, top_k=0, min_p=None, typical_p=1.0,
                              logits_processor=LogitsProcessorList([sampler]))
        with torch.inference_mode():
            out = self.net.generate(input_ids=ids, **gen_kwargs)
        texts = tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        answers, start = [], 0
        for n in rows:
            answers.append(texts[start:start + n])
            start += n
        return answers

    def answer_token_ids(self) -> tuple[int, int]:
        """The token ids of "0" and "1"; refused unless each is one token."""
        return answer_token_ids(self.processor.tokenizer)

    def answer_probs(self, requests: list[GenRequest]) -> list[tuple[float, float]]:
        """P("0"), P("1") of the first answer token, renormalised over the two (softmax of
        their two logits, in float64), one forward pass per request."""
        torch = self.torch
        ids = list(self.answer_token_ids())
        probs = []
        for req in requests:
            inputs = self._inputs(req)
            with torch.inference_mode():
                logits = self.net(**inputs).logits[0, -1]
            pair = torch.softmax(logits[ids].double(), dim=-1).tolist()
            probs.append((pair[0], pair[1]))
        return probs

    def prompt_tokens(self, request: GenRequest) -> int:
        """Prompt length in tokens (images expanded), for throughput accounting."""
        return int(self._inputs(request)["input_ids"].shape[1])

    def close(self) -> None:
        self.prefixes.clear()
        self.net = None
