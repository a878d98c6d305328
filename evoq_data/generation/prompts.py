"""The paper's prompts, verbatim (docs/method.md), with stable ids and hashes.

A prompt is text plus image slots. ``<image>`` in the template marks where an image goes; the
message builders turn a template into chat messages for each engine. The reasoning suffix is
appended after one space when reasoning is on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

IMAGE_TOKEN = "<image>"

COMPARE_TEMPLATE = (
    "<image><image> You are performing an image quality assessment task. Compare the two "
    "images and decide which one has better perceptual quality. Answer strictly with the "
    "index of the better image: 0 if the first image is better, or 1 if the second image is "
    "better."
)
SCORE_TEMPLATE = (
    "<image> You are doing the image quality assessment task. Here is the question: What is "
    "your overall rating on the quality of this picture? The rating should be a float between "
    "1 and 5, rounded to two decimal places, with 1 representing very poor quality and 5 "
    "representing excellent quality."
)
REASONING_SUFFIX = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the "
    "final answer. The reasoning process MUST BE enclosed within <think> </think> tags. The "
    "final answer MUST BE put in \\boxed{}."
)


@dataclass(frozen=True)
class Prompt:
    """One prompt: its id, the template with image slots, and how many images it takes."""

    prompt_id: str
    template: str
    reasoning: bool

    @property
    def num_images(self) -> int:
        return self.template.count(IMAGE_TOKEN)

    @property
    def text(self) -> str:
        """The instruction text without the image slots (what follows the images)."""
        return self.template.replace(IMAGE_TOKEN, "").strip()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest()


def _with_suffix(template: str, reasoning: bool) -> str:
    return f"{template} {REASONING_SUFFIX}" if reasoning else template


def compare_prompt(reasoning: bool = True) -> Prompt:
    """The offline voting prompt (two images, answer 0 or 1)."""
    return Prompt(
        prompt_id="compare-v1" + ("+reasoning" if reasoning else ""),
        template=_with_suffix(COMPARE_TEMPLATE, reasoning),
        reasoning=reasoning,
    )


def score_prompt(reasoning: bool = True) -> Prompt:
    """The single-image score prompt (answer a float in [1, 5])."""
    return Prompt(
        prompt_id="score-v1" + ("+reasoning" if reasoning else ""),
        template=_with_suffix(SCORE_TEMPLATE, reasoning),
        reasoning=reasoning,
    )


def chat_messages(prompt: Prompt, images: list) -> list[dict]:
    """One user turn: the images in shown order, then the instruction text.

    ``images`` are whatever the engine passes as image content (paths, PIL images or URLs);
    they are put in ``{"type": "image", "image": ...}`` parts.
    """
    if len(images) != prompt.num_images:
        raise ValueError(f"{prompt.prompt_id} takes {prompt.num_images} images, got {len(images)}")
    content = [{"type": "image", "image": img} for img in images]
    content.append({"type": "text", "text": prompt.text})
    return [{"role": "user", "content": content}]
