"""The ``transformers`` engine: Hugging Face ``generate`` on CPU or CUDA.

One ``generate`` call per request with ``num_return_sequences = n``, so the prompt is encoded
once per request. The torch RNG is seeded with the request's seed before each call, which makes
every request a pure function of (seed, images, prompt, sampling) on a given device: a killed
and resumed run reproduces the votes of an uninterrupted one exactly on CPU.
"""

from __future__ import annotations

import logging

from evoq_data.core.errors import require
from evoq_data.generation.engines import GenRequest, Sampling
from evoq_data.generation.modeling import load_model, load_processor
from evoq_data.generation.prompts import chat_messages

log = logging.getLogger(__name__)


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
                gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p,
                                  top_k=0)
            torch.manual_seed(req.seed)
            with torch.inference_mode():
                out = self.net.generate(**inputs, **gen_kwargs)
            new = out[:, inputs["input_ids"].shape[1]:]
            texts = tok.batch_decode(new, skip_special_tokens=True)
            outputs.append(texts if do_sample else texts * req.n)
        return outputs

    def prompt_tokens(self, request: GenRequest) -> int:
        """Prompt length in tokens (images expanded), for throughput accounting."""
        return int(self._inputs(request)["input_ids"].shape[1])

    def close(self) -> None:
        self.net = None
