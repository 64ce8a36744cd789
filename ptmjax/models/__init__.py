"""Flax NNX models: the transformer encoder (ESM-2 / BERT), task heads, Hugging Face import.

Modules by concept: `config` (ModelConfig), `layers` (dense, LayerNorm, rotary,
MLP), `attention` (batched and CPU attention), `encoder`, `heads`, `model`
(PtmModel, create/abstract, num_params, parameter paths), `hf_import`.
"""

from ptmjax.models.config import ModelConfig
from ptmjax.models.encoder import Encoder
from ptmjax.models.model import (
  HEADS,
  TRAITS,
  PtmModel,
  Traits,
  abstract_model,
  create_model,
  num_params,
)

__all__ = [
  'HEADS',
  'Encoder',
  'ModelConfig',
  'PtmModel',
  'TRAITS',
  'Traits',
  'abstract_model',
  'create_model',
  'num_params',
]
