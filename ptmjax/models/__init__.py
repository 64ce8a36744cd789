"""Flax NNX encoder, task heads and Hugging Face checkpoint import."""

from ptmjax.models.encoder import Encoder, ModelConfig, num_params
from ptmjax.models.model import HEADS, PtmModel, abstract_model, create_model

__all__ = [
  'HEADS',
  'Encoder',
  'ModelConfig',
  'PtmModel',
  'abstract_model',
  'create_model',
  'num_params',
]
