"""Format-only warm-up of a tiny test model: teach it the answer format, nothing about quality.

    python -m evoq_data.testing.warmup MODEL_IN MODEL_OUT [--steps 200] [--lr 3e-3] [--seed 0]
    python -m evoq_data.testing.tiny_vlm OUT_DIR --warmup-steps 200     # build + warm up

A random tiny Qwen2.5-VL never writes ``\\boxed{<number>}``, so the fidelity reward is 0 for
every answer and GRPO has nothing to learn from. This supervised warm-up trains it for a few
hundred steps on both of the paper's prompts, built as the engines and TRL build them (one
user turn: the image(s), then the prompt text with the reasoning suffix):

* the score prompt, target ``<think>ok</think> \\boxed{D}``, D uniform in {1, ..., 5};
* the compare prompt (two images), target ``<think>ok</think> \\boxed{B}``, B uniform in {0, 1}.

The images are random seeded textures and the answers are drawn independently of them: the
warmed-up model knows the format and answers uniformly at random, so its scores carry no
quality information (held-out SRCC near 0). Everything is seeded; the default 200 steps took
44 s on 2 CPU cores beside one other job (96 s with one thread on a heavily shared machine),
and ~95 % of the score answers then parse (GRPO's format reward does the rest).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import write_json_atomic

SCORE_VALUES = ("1", "2", "3", "4", "5")
COMPARE_VALUES = ("0", "1")


def answer(value: str) -> str:
    """The warm-up's target text for one answer (reasoning format, value in a box)."""
    return f"<think>ok</think> \\boxed{{{value}}}"


def random_image(rng, size: int = 64, brightness: float | None = None):
    """A seeded random texture: a smooth colour field darkened by ``brightness`` (uniform in
    [0.1, 1] when None), with a little grain."""
    import numpy as np
    from PIL import Image

    low = rng.uniform(0, 1, (8, 8, 3))
    up = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((size, size),
                                                                        Image.BICUBIC),
                    dtype=np.float32) / 255
    if brightness is None:
        brightness = rng.uniform(0.1, 1.0)
    img = (0.25 + 0.6 * up + rng.normal(0, 0.04, up.shape)) * brightness
    return Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8))


def encode_prompts(proc, prompt, image_sets: list[list]) -> dict:
    """The processor's inputs for ``prompt`` over each set of images, as the engines and TRL
    build them (one user turn, the generation prompt added). Same-size images: every prompt
    has the same length, so no padding inside."""
    from evoq_data.generation.prompts import chat_messages

    texts = [proc.apply_chat_template(chat_messages(prompt, imgs), add_generation_prompt=True,
                                      tokenize=False) for imgs in image_sets]
    return proc(text=texts, images=[im for imgs in image_sets for im in imgs],
                return_tensors="pt", padding=True)


def encode_batch(proc, prompt, rows: list[tuple[list, str]]) -> dict:
    """One supervised batch: ``rows`` of (images, target text), all for ``prompt``, as the
    engines and TRL build them (:func:`encode_prompts`; the loss only on the target and its
    end token)."""
    import torch

    tok = proc.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    enc = encode_prompts(proc, prompt, [imgs for imgs, _ in rows])
    targets = [tok(target, add_special_tokens=False)["input_ids"] + [eos] for _, target in rows]
    width = max(len(t) for t in targets)
    tgt = torch.full((len(rows), width), pad, dtype=torch.long)
    tgt_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, t in enumerate(targets):
        tgt[i, :len(t)] = torch.tensor(t)
        tgt_mask[i, :len(t)] = 1
    ids = torch.cat([enc["input_ids"], tgt], dim=1)
    mask = torch.cat([enc["attention_mask"], tgt_mask], dim=1)
    labels = ids.clone()
    labels[:, :enc["input_ids"].shape[1]] = -100
    labels[mask == 0] = -100
    return dict(input_ids=ids, attention_mask=mask, labels=labels,
                pixel_values=enc["pixel_values"], image_grid_thw=enc["image_grid_thw"])


def supervise(model_in: str | Path, model_out: str | Path, next_batch, *, steps: int, lr: float,
              seed: int, summary: dict, name: str, log_every: int = 50,
              quiet: bool = False, until=None, extend_steps: int = 100,
              max_steps: int | None = None) -> dict:
    """The supervised loop both tiny-model trainings share: load ``model_in``, take ``steps``
    AdamW steps on ``next_batch(step, proc) -> (label, prompt, rows)`` (rows as
    :func:`encode_batch` takes them), save the model, its processor and the checkpoint's
    sampling settings to ``model_out``, and write ``summary`` (plus steps, lr, seed, final loss
    and seconds) as ``evoq_<name>.json`` there. Returns the summary.

    With ``until(model, proc) -> (ok, record)``: after ``steps``, and after every
    ``extend_steps`` more, ``until`` is asked; training goes on while it says no, up to
    ``max_steps`` in all, then raises :class:`EvoqError` (nothing saved). Its records are
    kept in the summary as ``checks``."""
    import numpy as np
    import torch
    from transformers import AutoModelForImageTextToText

    from evoq_data.generation.modeling import load_processor

    if steps < 1 or lr <= 0 or extend_steps < 1:
        raise ValueError(f"{name} needs steps >= 1, lr > 0 and extend_steps >= 1")
    max_steps = steps if until is None else max(steps, max_steps or steps)
    torch.manual_seed(seed)
    proc = load_processor(str(model_in))
    model = AutoModelForImageTextToText.from_pretrained(str(model_in), dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    t0 = time.time()
    losses, checks = [], []
    step, target = 0, steps
    while True:
        if step == target:
            if until is None:
                break
            ok, record = until(model, proc)
            checks.append({"step": step, **record})
            if not quiet:
                print(f"{name} check at step {step}: {record}", flush=True)
            if ok:
                break
            if step >= max_steps:
                raise EvoqError(f"{name}: the check still fails after {step} steps, the "
                                f"limit ({record}); give more steps (the limit is 5x them "
                                "unless set) or another learning rate")
            target = min(step + extend_steps, max_steps)
        step += 1
        label, prompt, rows = next_batch(step, proc)
        loss = model(**encode_batch(proc, prompt, rows)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if not quiet and (step == 1 or step % log_every == 0 or step == target):
            print(f"{name} step {step}/{target} ({label}) loss {losses[-1]:.4f} "
                  f"({time.time() - t0:.0f}s)", flush=True)
    out = Path(model_out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    # Keep the checkpoint's sampling settings (do_sample, temperature 1, top_p 1).
    gen = Path(model_in, "generation_config.json")
    if gen.is_file():
        (out / "generation_config.json").write_text(gen.read_text())
    summary = {"model_in": str(model_in), "model_out": str(out), **summary, "steps": step,
               "lr": lr, "seed": seed, "final_loss": float(np.mean(losses[-10:])),
               "seconds": round(time.time() - t0, 1)}
    if until is not None:
        summary["checks"] = checks
    write_json_atomic(summary, out / f"evoq_{name}.json")
    return summary


def answer_validity(model, proc, *, samples: int = 64, seed: int = 0,
                    image_size: int = 64) -> dict[str, float]:
    """The share of answers that parse, per prompt (``score``, ``compare``): one answer to each
    of ``samples`` fresh random images (pairs for compare), sampled at temperature 1 as GRPO
    and the votes sample. Leaves ``model`` in the mode it found it and torch's random state
    as it was (a check between training steps changes nothing the training draws)."""
    import numpy as np
    import torch

    from evoq_data.generation.parse import parse_compare, parse_score
    from evoq_data.generation.prompts import compare_prompt, score_prompt

    rng = np.random.default_rng([seed, 7])  # not the training's image stream
    was_training = model.training
    model.eval()
    shares = {}
    try:
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(seed)
            for kind, prompt, parse in (("score", score_prompt(True), parse_score),
                                        ("compare", compare_prompt(True), parse_compare)):
                enc = encode_prompts(proc, prompt, [
                    [random_image(rng, image_size) for _ in range(prompt.num_images)]
                    for _ in range(samples)])
                out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0,
                                     top_k=0, max_new_tokens=24)
                answers = proc.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                            skip_special_tokens=True)
                shares[kind] = round(sum(parse(a).value is not None for a in answers)
                                     / samples, 3)
    finally:
        model.train(was_training)
    return shares


def warmup(model_in: str | Path, model_out: str | Path, *, steps: int = 200, lr: float = 3e-3,
           batch_size: int = 16, compare_every: int = 4, seed: int = 0, image_size: int = 64,
           log_every: int = 50, quiet: bool = False, min_valid: float = 0.0,
           max_steps: int | None = None, check_samples: int = 64) -> dict:
    """Warm ``model_in`` up on the answer format; save it to ``model_out``; return a summary.

    Every ``compare_every``-th step is a batch of compare prompts (two images, answer 0 or 1),
    the others are score prompts (one image, answer 1..5); 0 means score prompts only.

    ``min_valid`` > 0: after ``steps``, the share of sampled answers that parse
    (:func:`answer_validity`) must reach it for both prompts; if not, the warm-up goes on
    100 steps at a time, up to ``max_steps`` (default 5x ``steps``), else fails. Some seeds
    need it: after 200 steps the seed-1 tiny model answered both prompts from one mixed
    distribution (0..5), so half its compare answers did not parse, where seeds 0 and 2
    were at 100 % on both. A model that passes at ``steps`` is the same model as without
    the check.
    """
    import numpy as np

    from evoq_data.generation.prompts import compare_prompt, score_prompt

    if batch_size < 1:
        raise ValueError("warm-up needs batch_size >= 1")
    pick = random.Random(seed)
    rng = np.random.default_rng(seed)
    kinds = {
        "score": (score_prompt(True), SCORE_VALUES),
        "compare": (compare_prompt(True), COMPARE_VALUES),
    }

    def next_batch(step: int, proc):
        kind = "compare" if compare_every and step % compare_every == 0 else "score"
        prompt, values = kinds[kind]
        rows = []
        for _ in range(batch_size):
            imgs = [random_image(rng, image_size) for _ in range(prompt.num_images)]
            rows.append((imgs, answer(pick.choice(values))))
        return kind, prompt, rows

    summary = {"batch_size": batch_size, "compare_every": compare_every}
    until = None
    if min_valid > 0:
        summary["min_valid"] = min_valid

        def until(model, proc):
            shares = answer_validity(model, proc, samples=check_samples, seed=seed,
                                     image_size=image_size)
            return min(shares.values()) >= min_valid, {"valid": shares}

    return supervise(model_in, model_out, next_batch, steps=steps, lr=lr, seed=seed,
                     summary=summary, name="warmup", log_every=log_every, quiet=quiet,
                     until=until, max_steps=max_steps or 5 * steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_in")
    parser.add_argument("model_out")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--compare-every", type=int, default=4,
                        help="every N-th step trains the compare prompt (0: score prompt only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-valid", type=float, default=0.0,
                        help="go on 100 steps at a time until this share of sampled answers "
                             "parses for both prompts (0: no check)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="the limit for --min-valid (default 5x --steps)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    summary = warmup(args.model_in, args.model_out, steps=args.steps, lr=args.lr,
                     batch_size=args.batch_size, compare_every=args.compare_every,
                     seed=args.seed, quiet=args.quiet, min_valid=args.min_valid,
                     max_steps=args.max_steps)
    print(json.dumps(summary))


if __name__ == "__main__":
    from evoq_data.core.errors import main_or_exit

    main_or_exit(main)
