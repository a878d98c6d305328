"""Run vLLM's Qwen2.5-VL support on machines without a usable torchvision.

vLLM builds the Hugging Face Qwen2.5-VL processor itself, and in transformers 5.x two things on
that path need torchvision: the module ``transformers.models.qwen2_vl.image_processing_qwen2_vl``
(it imports ``torchvision.transforms.v2`` at the top, and vLLM imports ``smart_resize`` from it)
and ``Qwen2_5_VLProcessor.from_pretrained`` (it always loads a video processor). On CPU-only
machines torchvision is absent or a CUDA build that fails to import (see docs/engines.md), so
:func:`install` patches both, and nothing else:

* the image-processing module is replaced by one that re-exports the PIL implementation under
  the torchvision names (same ``smart_resize``, same resizing maths);
* ``Qwen2_5_VLProcessor.from_pretrained`` builds the image-only processor through
  :func:`evoq_data.generation.modeling.load_processor`, the project's one loading helper;
* vLLM inspects model classes in a fresh ``python -m vllm.model_executor.models.registry``
  subprocess, which would not have these patches: the command is pointed at
  ``python -m evoq_data.generation.compat``, which installs them and then runs vLLM's own entry.

:func:`install` is idempotent and does nothing when torchvision imports, so the same code runs
unpatched on a GPU machine with a proper torchvision. evoq never sends videos.
"""

from __future__ import annotations

import logging
import sys
import types

from evoq_data.generation.modeling import has_torchvision

log = logging.getLogger(__name__)

_IMAGE_MODULE = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
_installed: bool | None = None  # None: not tried yet; then whether patches were applied


def needed() -> bool:
    """True when the patches are needed (torchvision missing or unusable)."""
    return not has_torchvision()


def _image_module() -> types.ModuleType:
    """A stand-in for the torchvision image-processing module, backed by the PIL one."""
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as pil

    module = types.ModuleType(_IMAGE_MODULE, "Qwen2-VL image processor (evoq: PIL backend).")
    module.smart_resize = pil.smart_resize
    module.Qwen2VLImageProcessorKwargs = pil.Qwen2VLImageProcessorKwargs
    module.Qwen2VLImageProcessor = pil.Qwen2VLImageProcessorPil
    module.__all__ = ["Qwen2VLImageProcessor"]
    return module


class NoVideoProcessor:
    """Stands where vLLM looks for a video processor; evoq never sends videos.

    vLLM reads ``valid_kwargs`` (and the merge and patch sizes) of the video processor to
    list the processor's options; calling it is an error.
    """

    def __init__(self, image_processor) -> None:
        from transformers.processing_utils import VideosKwargs

        self.valid_kwargs = VideosKwargs
        self.merge_size = getattr(image_processor, "merge_size", 2)
        self.patch_size = getattr(image_processor, "patch_size", 14)
        self.temporal_patch_size = getattr(image_processor, "temporal_patch_size", 2)

    def __call__(self, *args, **kwargs):
        raise NotImplementedError("evoq sends no videos: no video processor without torchvision")


def _patch_processor() -> None:
    from transformers.models.qwen2_5_vl import processing_qwen2_5_vl as mod

    cls = mod.Qwen2_5_VLProcessor

    def from_pretrained(klass, pretrained_model_name_or_path, *args, **kwargs):
        from evoq_data.generation.modeling import load_processor

        tokenizer = kwargs.pop("tokenizer", None)
        processor = load_processor(
            str(pretrained_model_name_or_path), revision=kwargs.get("revision"),
            min_pixels=kwargs.get("min_pixels"), max_pixels=kwargs.get("max_pixels"),
            trust_remote_code=bool(kwargs.get("trust_remote_code", False)),
        )
        if tokenizer is not None:  # the caller's tokenizer (vLLM passes its own)
            processor.tokenizer = tokenizer
        processor.video_processor = NoVideoProcessor(processor.image_processor)
        return processor

    cls._evoq_original_from_pretrained = cls.__dict__.get("from_pretrained")
    cls.from_pretrained = classmethod(from_pretrained)


def _patch_vllm_registry() -> None:
    try:
        from vllm.model_executor.models import registry
    except ImportError:
        return  # no vLLM here: the transformers-side patches are all there is to do
    registry._SUBPROCESS_COMMAND = [sys.executable, "-m", "evoq_data.generation.compat"]


def install() -> bool:
    """Apply the no-torchvision patches once; return whether they are in place."""
    global _installed
    if _installed is not None:
        return _installed
    if not needed():
        _installed = False
        return False
    sys.modules[_IMAGE_MODULE] = _image_module()
    _patch_processor()
    _patch_vllm_registry()
    log.info("torchvision is not usable: Qwen2.5-VL processors use the PIL image processor")
    _installed = True
    return True


if __name__ == "__main__":  # vLLM's model-inspection subprocess, with the patches in place
    install()
    from vllm.model_executor.models.registry import _run

    _run()
