"""Load Qwen2.5-VL-family checkpoints: one helper, with or without torchvision.

transformers 5.x always wants a video processor for Qwen2.5-VL, and its video processor needs
torchvision, which is absent (or broken) on CPU-only machines. :func:`build_processor` and
:func:`load_processor` give a working processor in both cases: with torchvision the stock
``AutoProcessor``; without it the same ``Qwen2_5_VLProcessor`` class with the PIL image
processor and no video processor (evoq never sends videos).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

from evoq_data.core.errors import EvoqError, require

log = logging.getLogger(__name__)


def has_torchvision() -> bool:
    """True when torchvision is installed *and* imports beside this torch."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a CUDA build beside CPU torch raises RuntimeError
        return False
    return True


def _processor_class():
    transformers = require("transformers", "transformers")

    class ImageOnlyQwen2_5_VLProcessor(transformers.Qwen2_5_VLProcessor):
        """Qwen2.5-VL processor that accepts ``video_processor=None`` (images only)."""

        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

        def save_pretrained(self, save_directory, *args, **kwargs):
            """Save tokenizer, image processor and chat template in the standard layout."""
            from evoq_data.core.io import read_json, write_json_atomic

            out = Path(save_directory)
            out.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save_pretrained(out)
            self.image_processor.save_pretrained(out)
            cfg_path = out / "preprocessor_config.json"
            cfg = read_json(cfg_path, "image processor config")
            cfg["image_processor_type"] = "Qwen2VLImageProcessor"
            cfg["processor_class"] = "Qwen2_5_VLProcessor"
            write_json_atomic(cfg, cfg_path)
            if self.chat_template:
                (out / "chat_template.jinja").write_text(self.chat_template)
            return [str(out)]

    return ImageOnlyQwen2_5_VLProcessor


def _image_processor(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )
    return Qwen2VLImageProcessorPil(**kwargs)


def build_processor(tokenizer, min_pixels: int, max_pixels: int, chat_template: str | None = None):
    """A fresh image-only Qwen2.5-VL processor around ``tokenizer``."""
    ip = _image_processor(min_pixels=min_pixels, max_pixels=max_pixels)
    cls = _processor_class()
    return cls(image_processor=ip, tokenizer=tokenizer, video_processor=None,
               chat_template=chat_template or tokenizer.chat_template)


def load_processor(model: str, *, revision: str | None = None, min_pixels: int | None = None,
                   max_pixels: int | None = None, trust_remote_code: bool = False):
    """The processor of a Qwen2.5-VL checkpoint (Hub id or folder), with or without torchvision."""
    transformers = require("transformers", "transformers")
    extra = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v}
    try:
        if has_torchvision():
            return transformers.AutoProcessor.from_pretrained(
                model, revision=revision, trust_remote_code=trust_remote_code, **extra)
        tok = transformers.AutoTokenizer.from_pretrained(model, revision=revision)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ip_cfg = transformers.AutoImageProcessor.from_pretrained(
                model, revision=revision, use_fast=False).to_dict()
        keep = ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size",
                "image_mean", "image_std", "do_resize", "do_rescale", "do_normalize",
                "rescale_factor", "do_convert_rgb", "size")
        kwargs = {k: ip_cfg[k] for k in keep if ip_cfg.get(k) is not None}
        kwargs.update(extra)
        if "size" in kwargs and ("min_pixels" in extra or "max_pixels" in extra):
            kwargs.pop("size")
        ip = _image_processor(**kwargs)
        cls = _processor_class()
        return cls(image_processor=ip, tokenizer=tok, video_processor=None,
                   chat_template=tok.chat_template)
    except EvoqError:
        raise
    except OSError as exc:
        raise EvoqError(f"cannot load a processor for {model!r}: {exc}") from exc


def check_vlm_checkpoint(model: str) -> None:
    """Fail with one line if a local folder is not a Qwen2.5-VL-style vision-language model."""
    path = Path(model)
    if not path.exists():
        if model.startswith((".", "/")) or model.count("/") != 1:
            raise EvoqError(f"model not found: {model} (give a local folder or a Hub id)")
        return  # a Hub id: resolved by the engine
    cfg = path / "config.json"
    if not path.is_dir() or not cfg.is_file():
        raise EvoqError(f"model folder {model} has no config.json: not a model checkpoint")
    from evoq_data.core.io import read_json

    config = read_json(cfg, "model config")
    if "vision_config" not in config:
        raise EvoqError(
            f"model {model} is not a vision-language model (model_type "
            f"{config.get('model_type')!r} has no vision_config); evoq needs a VLM such as "
            "Qwen2.5-VL"
        )


def load_model(model: str, *, revision: str | None = None, dtype: str = "auto",
               device: str = "auto", attn_implementation: str | None = None):
    """Load a Qwen2.5-VL-style model for generation (``AutoModelForImageTextToText``)."""
    torch = require("torch", "transformers")
    transformers = require("transformers", "transformers")
    check_vlm_checkpoint(model)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise EvoqError(f"device {device!r} asked for, but this torch sees no CUDA GPU")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    kwargs = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        net = transformers.AutoModelForImageTextToText.from_pretrained(
            model, revision=revision, **kwargs)
    except (OSError, ValueError) as exc:
        raise EvoqError(f"cannot load model {model!r}: {exc}") from exc
    return net.to(device).eval()
