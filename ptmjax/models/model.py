"""The ptmjax model: encoder plus per-residue PTM, per-protein count and MLM heads.

Outputs are per token; `ptmjax.data.tokenizer.Tokenizer.token_outputs_to_residues`
moves them onto residues (residue i is token i + 1, after <cls>).
"""

from __future__ import annotations

import math

import jax
from flax import nnx

from ptmjax.models import encoder, proteinbert
from ptmjax.models.config import ModelConfig, Traits
from ptmjax.models.heads import CountHead, PtmHead
from ptmjax.models.layers import default_segments

HEADS = ('ptm', 'count', 'mlm', 'annotations')


# Each encoder family is a module with one interface: `Model` (the encoder), `TRAITS`,
# `lm_head(cfg, rngs)`, `extra_heads(cfg, rngs)` and `outputs(model, ...)` (its forward
# through the heads). Nothing outside `models/` tests a family. Published weights come
# in through each family's importer, a layer above this one (it builds a PtmModel):
# `hf_import.convert` (ESM-2 / ProtBert) and `proteinbert_import.convert`.
FAMILIES = {'transformer': encoder, 'proteinbert': proteinbert}
TRAITS = {name: family.TRAITS for name, family in FAMILIES.items()}


class PtmModel(nnx.Module):
  """An encoder of either family with PTM, count and LM heads (and, for ProteinBERT, the
  annotation head).

  Parameter paths start with `encoder/`, `ptm_head/`, `count_head/`, `mlm_head/` or
  `annotation_head/`, which is what freezing and `init_from` skip patterns match.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    # Creation order is the order of the random initialisation stream: encoder, PTM,
    # count, LM head, then a family's own heads, as before the family modules, so a
    # seed gives the same model.
    family = FAMILIES[cfg.family]
    self.encoder = family.Model(cfg, rngs=rngs)
    self.ptm_head = PtmHead(cfg, rngs)
    self.count_head = CountHead(cfg, rngs)
    self.mlm_head = family.lm_head(cfg, rngs)
    for name, head in family.extra_heads(cfg, rngs).items():
      setattr(self, name, head)

  @property
  def traits(self) -> Traits:
    return TRAITS[self.cfg.family]

  def residue_mask(self, tokens, segment_ids):
    """True on residue tokens: not padding, <cls> or <eos>."""
    cfg = self.cfg
    return (
      (segment_ids > 0) & (tokens != cfg.pad_id) & (tokens != cfg.cls_id) & (tokens != cfg.eos_id)
    )

  def __call__(
    self,
    tokens,
    segment_ids=None,
    positions=None,
    *,
    heads=('ptm',),
    num_segments=1,
    annotations=None,
  ):
    """Runs the encoder and the requested heads.

    Args:
      tokens: int [B, T].
      segment_ids, positions: see `Encoder.__call__` (ProteinBERT has no positions).
      heads: any of 'ptm', 'count', 'mlm', 'annotations' (ProteinBERT only).
      num_segments: most proteins per row (count head; ProteinBERT's global track).
      annotations: ProteinBERT only: float [B, num_segments, num_annotations] input.

    Returns:
      dict with 'hidden' [B, T, D] and, when asked for, 'ptm' logits
      [B, T, num_ptm_types], 'count' [B, num_segments, num_ptm_types], 'mlm'
      logits [B, T, vocab_size] and 'annotations' logits [B, num_segments,
      num_annotations]; ProteinBERT adds 'pooled', its global track [B,
      num_segments, global_dim]. Heads in float32.
    """
    unknown = set(heads) - set(HEADS)
    if unknown:
      raise ValueError(f'unknown heads {sorted(unknown)}; choose from {HEADS}')
    if segment_ids is None:
      segment_ids = default_segments(tokens, self.cfg.pad_id)
    return FAMILIES[self.cfg.family].outputs(
      self, tokens, segment_ids, positions, heads, num_segments, annotations
    )


def create_model(cfg: ModelConfig, seed: int = 0) -> PtmModel:
  """A freshly initialised model on the default device."""
  return PtmModel(cfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))


def abstract_model(cfg: ModelConfig) -> PtmModel:
  """The model's structure with ShapeDtypeStructs instead of arrays."""
  return nnx.eval_shape(lambda: create_model(cfg))


def num_params(cfg: ModelConfig) -> int:
  """Parameter count of the model (encoder and heads), without allocating it."""
  abstract = nnx.eval_shape(lambda: PtmModel(cfg, rngs=nnx.Rngs(0)))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


# --- parameter paths ------------------------------------------------------------------
# 'encoder/layers/0/attention/query/kernel', 'ptm_head/out/bias', ...: what freeze
# regexes, `init_from.skip` and the model folders' Orbax trees use. They follow the
# attribute names above, so renaming an attribute breaks existing checkpoints.
def path_str(path) -> str:
  """'/'-joined keys of a jax key path (a Variable's trailing `.value` left out)."""
  parts = [str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k)))) for k in path]
  return '/'.join(parts[:-1] if parts and parts[-1] == 'value' else parts)


def param_paths(params) -> list[str]:
  """The path of every leaf of a parameter tree."""
  return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
