"""The ``transformers`` engine: Hugging Face ``generate`` on CPU or CUDA.

One ``generate`` call per request with ``num_return_sequences = n``, so the images are
processed once per request and the ``n`` samples decode as one batch. Each sample draws from
its own random stream: sample ``i`` of a request seeded ``s`` uses a generator seeded
``s + i`` (:class:`PerSampleSampler`, exact Gumbel-max sampling of the temperature- and
top-p-processed distribution), so a sample does not depend on how many others were asked with
it. A request for samples ``j..j+m`` (seed ``s + j``) gives exactly samples ``j..j+m`` of the
request for all of them, which is what ``--stop`` relies on; a killed and resumed run
reproduces the votes of an uninterrupted one exactly on CPU.

:meth:`TransformersEngine.answer_probs` (``--mode logprob``) runs one forward pass per
request and reads the logits of the tokens ``0`` and ``1`` at the first answer position.
"""

from __future__ import annotations

import logging

from evoq_data.core.errors import require
from evoq_data.generation.engines import GenRequest, Sampling, answer_token_ids
from evoq_data.generation.modeling import load_model, load_processor
from evoq_data.generation.prompts import chat_messages

log = logging.getLogger(__name__)


class PerSampleSampler:
    """A logits processor that makes HF ``generate`` draw row ``i`` of a batch with its own
    generator (seeded ``seed + i``): Gumbel-max over the temperature- and top-p-processed
    logits, then every other token masked, so ``generate``'s own multinomial draw can only
    return the chosen token. The draw of row ``i`` at step ``t`` depends only on
    (seed + i, t, its logits), never on the batch it shares."""

    def __init__(self, torch, seed: int, n: int, temperature: float, top_p: float,
                 device) -> None:
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        self.torch = torch
        self.warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1 else []
        if top_p < 1:
            self.warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
        self.generators = []
        for i in range(n):
            g = torch.Generator(device=device)
            g.manual_seed(seed + i)
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


class TransformersEngine:
    name = "transformers"

    def __init__(self, model: str, *, model_revision: str = "unknown", revision: str | None = None,
                 device: str = "auto", dtype: str = "auto", min_pixels: int | None = None,
                 max_pixels: int | None = None, attn_implementation: str | None = None) -> None:
        self.torch = require("torch", "transformers")
        self.model = model
        self.model_revision = model_revision
        self.processor = load_processor(model, revision=revision, min_pixels=min_pixels,
                                        max_pixels=max_pixels)
        self.net = load_model(model, revision=revision, dtype=dtype, device=device,
                              attn_implementation=attn_implementation)
        self.device = next(self.net.parameters()).device

    def _inputs(self, request: GenRequest):
        images = request.load_images()
        messages = chat_messages(request.prompt, images)
        text = self.processor.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        inputs = self.processor(text=[text], images=images, return_tensors="pt")
        return inputs.to(self.device)

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[list[str]]:
        from transformers import LogitsProcessorList

        torch = self.torch
        tok = self.processor.tokenizer
        outputs: list[list[str]] = []
        for req in requests:
            inputs = self._inputs(req)
            do_sample = sampling.temperature > 0
            # Greedy decoding gives one answer; it is repeated n times (as vLLM does).
            gen_kwargs = dict(max_new_tokens=sampling.max_tokens,
                              num_return_sequences=req.n if do_sample else 1,
                              do_sample=do_sample, pad_token_id=tok.pad_token_id)
            if do_sample:
                # temperature and top-p act inside the per-sample sampler; generate's own
                # warpers are off and its multinomial sees one allowed token per row
                sampler = PerSampleSampler(torch, req.seed, req.n, sampling.temperature,
                                           sampling.top_p, self.device)
                gen_kwargs.update(temperature=1.0, top_p=1.0, top_k=0, min_p=None,
                                  typical_p=1.0, logits_processor=LogitsProcessorList([sampler]))
            with torch.inference_mode():
                out = self.net.generate(**inputs, **gen_kwargs)
            new = out[:, inputs["input_ids"].shape[1]:]
            texts = tok.batch_decode(new, skip_special_tokens=True)
            outputs.append(texts if do_sample else texts * req.n)
        return outputs

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
        self.net = None
