"""X-SAM inference (arXiv 2508.04655), semantics of the published Phi-3 checkpoint, built on transformers.

Knows nothing of video, Ray or the pipeline: images and masks in, masks out.
"""

from xsam.checkpoint import CheckpointError
from xsam.configuration_xsam import XSamConfig, XSamConnectorConfig
from xsam.modeling_xsam import XSamModel
from xsam.postprocessing import XSamPrediction
from xsam.predictor import XSamPredictor, XSamPromptMemory
from xsam.processing_xsam import XSamProcessor

#: Short name for the model class: ``XSam.from_pretrained(path_or_hub_id)``.
XSam = XSamModel

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
