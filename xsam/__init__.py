"""X-SAM inference (arXiv 2508.04655), semantics of the published Phi-3 checkpoint, built on transformers.

Knows nothing of video, Ray or the pipeline: images and masks in, masks out. The public names below load lazily,
so ``import xsam.tasks`` (a command line's choices, say) does not import torch and transformers.
"""

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "CheckpointError": "xsam.checkpoint",
    "XSamConfig": "xsam.configuration_xsam",
    "XSamConnectorConfig": "xsam.configuration_xsam",
    "XSamModel": "xsam.modeling_xsam",
    "XSamPrediction": "xsam.postprocessing",
    "XSamPredictor": "xsam.predictor",
    "XSamPromptMemory": "xsam.memory",
    "XSamProcessor": "xsam.processing_xsam",
}

__all__ = [
    "CheckpointError",
    "XSam",
    "XSamConfig",
    "XSamConnectorConfig",
    "XSamModel",
    "XSamPrediction",
    "XSamPredictor",
    "XSamPromptMemory",
    "XSamProcessor",
]

if TYPE_CHECKING:
    from xsam.checkpoint import CheckpointError
    from xsam.configuration_xsam import XSamConfig, XSamConnectorConfig
    from xsam.modeling_xsam import XSamModel
    from xsam.modeling_xsam import XSamModel as XSam
    from xsam.postprocessing import XSamPrediction
    from xsam.memory import XSamPromptMemory
    from xsam.predictor import XSamPredictor
    from xsam.processing_xsam import XSamProcessor


def __getattr__(name: str):
    if name == "XSam":  # short name for the model class: ``XSam.from_pretrained(path_or_hub_id)``
        name = "XSamModel"
    if name not in _EXPORTS:
        raise AttributeError(f"module 'xsam' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
