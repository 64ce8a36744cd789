"""Flax NNX models: two encoder families (the ESM-2 / BERT transformer and ProteinBERT),
task heads, and the importers and exporters of published weights.

Modules by concept: `config` (ModelConfig, Traits), `layers` (dense, LayerNorm,
rotary, MLP), `attention` (batched and CPU attention), the families `encoder` and
`proteinbert` (each: `Model`, `TRAITS`, `lm_head`, `extra_heads`, `outputs`),
`heads`, `model` (PtmModel over `FAMILIES`, create/abstract, num_params, parameter
paths), `hf_import` / `hf_export` and `proteinbert_import` (published weights in and out).
"""

from ptmjax.models.config import ModelConfig
from ptmjax.models.encoder import Encoder
from ptmjax.models.model import (
  FAMILIES,
  HEADS,
  TRAITS,
  PtmModel,
  Traits,
  abstract_model,
  create_model,
  num_params,
)

__all__ = [
  'FAMILIES',
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
