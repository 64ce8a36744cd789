"""The ptmjax model: encoder plus per-residue PTM, per-protein count and MLM heads.

Outputs are per token; `ptmjax.data.tokenizer.Tokenizer.token_outputs_to_residues`
moves them onto residues (residue i is token i + 1, after <cls>).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from ptmjax.models.config import ModelConfig
from ptmjax.models.encoder import Encoder
from ptmjax.models.heads import CountHead, MlmHead, PtmHead, segment_mean
from ptmjax.models.layers import default_segments
from ptmjax.models.proteinbert import AnnotationHead, LmHead, ProteinBertEncoder

HEADS = ('ptm', 'count', 'mlm', 'annotations')


@dataclasses.dataclass(frozen=True)
class Traits:
  """What code outside `models/` may know of an encoder family, so that the train
  step, inference and embed ask the model instead of testing its family."""

  # The MLM corruption: 'replace' (ProteinBERT: random tokens of the whole vocabulary,
  # the loss on every real token) or 'mask' (BERT: 80/10/10 on chosen residues).
  corruption: str
  # No position embeddings and a cost linear in length: a protein is read whole
  # rather than in `max_len` windows.
  whole_sequences: bool
  # Per-protein outputs besides 'hidden' ('pooled': ProteinBERT's global track).
  protein_outputs: tuple[str, ...]
  # The original's padding mode (`padding='reference'`, `ptmjax embed --pad-to`).
  reference_padding: bool


TRAITS = {
  'transformer': Traits('mask', False, (), False),
  'proteinbert': Traits('replace', True, ('pooled',), True),
}


class PtmModel(nnx.Module):
  """An encoder of either family with PTM, count and LM heads (and, for ProteinBERT, the
  annotation head).

  Parameter paths start with `encoder/`, `ptm_head/`, `count_head/`, `mlm_head/` or
  `annotation_head/`, which is what freezing and `init_from` skip patterns match.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    # Creation order is the order of the random initialisation stream: encoder, PTM,
    # count, LM head, as before the ProteinBERT family, so a seed gives the same model.
    pb = cfg.family == 'proteinbert'
    self.encoder = ProteinBertEncoder(cfg, rngs=rngs) if pb else Encoder(cfg, rngs=rngs)
    self.ptm_head = PtmHead(cfg, rngs)
    self.count_head = CountHead(cfg, rngs)
    self.mlm_head = LmHead(cfg, rngs=rngs) if pb else MlmHead(cfg, rngs)
    if pb:
      self.annotation_head = AnnotationHead(cfg, rngs=rngs)

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
    if self.cfg.family == 'proteinbert':
      return self._proteinbert(tokens, segment_ids, heads, num_segments, annotations)
    hidden = self.encoder(tokens, segment_ids, positions)
    out = {'hidden': hidden}
    if 'ptm' in heads:
      out['ptm'] = self.ptm_head(hidden, segment_ids)
    if 'count' in heads:
      pooled = segment_mean(
        hidden, segment_ids, self.residue_mask(tokens, segment_ids), num_segments
      )
      out['count'] = self.count_head(pooled)
    if 'mlm' in heads:
      out['mlm'] = self.mlm_head(hidden, self.encoder.token_embed)
    if 'annotations' in heads:
      raise ValueError("the 'annotations' head is ProteinBERT's")
    return out

  def _proteinbert(self, tokens, segment_ids, heads, num_segments, annotations):
    hidden, pooled = self.encoder(
      tokens, segment_ids, num_segments=num_segments, annotations=annotations
    )
    out = {'hidden': hidden, 'pooled': pooled}
    if self.cfg.padding == 'reference':  # the whole row, padding included, is the protein
      segment_ids = jnp.ones_like(tokens)
    if 'ptm' in heads:
      out['ptm'] = self.ptm_head(hidden, segment_ids)
    if 'count' in heads:
      out['count'] = self.count_head(pooled)
    if 'mlm' in heads:
      out['mlm'] = self.mlm_head(hidden)
    if 'annotations' in heads:
      out['annotations'] = self.annotation_head(pooled)
    return out


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
