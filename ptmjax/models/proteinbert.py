"""The ProteinBERT encoder (Brandes et al., Bioinformatics 2022) in Flax NNX.

Two tracks, no self-attention, cost linear in length:

* a *local* track, one vector of width `embed_dim` per token: token embedding,
  then per block a narrow (dilation 1) and a wide (dilation `wide_dilation`)
  'same' convolution, the global vector broadcast to every token, residual +
  LayerNorm, a dense layer, residual + LayerNorm;
* a *global* track, one vector of width `global_dim` per protein, started from
  the per-protein annotations (`num_annotations`; zeros when there are none):
  per block a dense layer on the previous global vector plus a *global
  attention* whose one query per head comes from the previous global vector
  and whose keys and values come from the updated local vectors, residual +
  LayerNorm, a dense layer, residual + LayerNorm.

As in the reference (the `protein-bert` package, `conv_and_global_attention_model`):
exact-erf GELU everywhere, LayerNorm epsilon 1e-3 (a config field), queries and
keys through tanh and values through GELU, no biases and no output projection
in the global attention, weights laid out as Keras holds them (`proteinbert_import`
copies them in as they are).

Unlike the reference, rows may pack several proteins (`segment_ids` 1, 2, ...;
0 = padding): convolutions never reach across proteins or into padding, each
protein has its own global vector ([B, S, global_dim]) and attends only to its
own tokens, so with `padding='masked'` a protein's outputs do not depend on
what else shares its row. `padding='reference'` treats the whole row, padding
tokens included, as one protein: the original's behaviour (its outputs
depend on the padded length), for parity and for the published weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ptmjax import sharding as shd
from ptmjax.models.config import ACTIVATIONS, ModelConfig, Traits
from ptmjax.models.layers import INIT, Dense, default_segments, layer_norm

# Local width shards like a transformer's model width, the global width like its MLP.
LOCAL, GLOBAL = shd.EMBED, shd.MLP


def reference_segments(tokens):
  """The original's view of a row: every token, padding included, is one protein."""
  return jnp.ones(tokens.shape, jnp.int32)


def broadcast_to_tokens(per_protein, segment_ids):
  """[B, S, D] per protein -> [B, T, D] per token (0 on padding, segment 0)."""
  idx = jnp.clip(segment_ids - 1, 0, per_protein.shape[1] - 1)
  out = jnp.take_along_axis(per_protein, idx[..., None], axis=1)
  return jnp.where((segment_ids > 0)[..., None], out, 0)


class SegmentConv(nnx.Module):
  """A 'same' 1-D convolution (Keras Conv1D layout: kernel [k, in, out]) that reads only
  tokens of the same protein: a neighbour in another protein or in padding counts as 0,
  as Keras' zero padding beyond the ends of a sequence does."""

  def __init__(self, dim: int, kernel: int, dilation: int, *, rngs: nnx.Rngs, dtype):
    self.kernel_size, self.dilation, self.dtype = kernel, dilation, dtype
    self.kernel = nnx.Param(
      shd.logical(INIT, (None, LOCAL, None))(rngs.params(), (kernel, dim, dim))
    )
    self.bias = nnx.Param(shd.logical(nnx.initializers.zeros_init(), (None,))(None, (dim,)))

  def __call__(self, x, segment_ids, packed: bool = True):
    """x [B, T, in] -> [B, T, out]. `packed=False` (one protein per row, a static
    promise): XLA's own convolution on x with padding zeroed, which reads the same
    values 4x faster on CPU than the per-tap masking packed rows need."""
    k, d, t = self.kernel_size, self.dilation, x.shape[1]
    total = d * (k - 1)  # TensorFlow's 'same': the odd extra zero goes to the right
    left = total // 2
    if not packed:
      y = jax.lax.conv_general_dilated(
        jnp.where((segment_ids > 0)[..., None], x, 0).astype(self.dtype),
        self.kernel[...].astype(self.dtype),
        window_strides=(1,),
        padding=[(left, total - left)],
        rhs_dilation=(d,),
        dimension_numbers=('NWC', 'WIO', 'NWC'),
        preferred_element_type=jnp.float32,
      )
      return (y + self.bias[...]).astype(self.dtype)
    xp = jnp.pad(x, ((0, 0), (left, total - left), (0, 0)))
    sp = jnp.pad(segment_ids, ((0, 0), (left, total - left)))
    taps = []
    for j in range(k):
      same = (sp[:, j * d : j * d + t] == segment_ids) & (segment_ids > 0)
      taps.append(jnp.where(same[..., None], xp[:, j * d : j * d + t], 0))
    stacked = jnp.stack(taps, axis=2).astype(self.dtype)  # [B, T, k, in]
    kernel = self.kernel[...].astype(self.dtype)
    y = jnp.einsum('btki,kio->bto', stacked, kernel, preferred_element_type=jnp.float32)
    return (y + self.bias[...]).astype(self.dtype)


class GlobalAttention(nnx.Module):
  """One query per head from each protein's global vector over that protein's tokens."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    h, k, g, d = cfg.num_heads, cfg.key_dim, cfg.global_dim, cfg.embed_dim
    v = g // h
    init = nnx.initializers.glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,))
    self.Wq = nnx.Param(shd.logical(init, (shd.HEADS, GLOBAL, shd.KV))(rngs.params(), (h, g, k)))
    self.Wk = nnx.Param(shd.logical(init, (shd.HEADS, LOCAL, shd.KV))(rngs.params(), (h, d, k)))
    self.Wv = nnx.Param(shd.logical(init, (shd.HEADS, LOCAL, shd.KV))(rngs.params(), (h, d, v)))
    self.scale = k**-0.5
    self.act = ACTIVATIONS[cfg.activation]
    self.dtype = cfg.compute_dtype

  def __call__(self, glob, x, segment_ids):
    """glob [B, S, G], x [B, T, D] -> [B, S, G] (heads x value width)."""
    dt, f32 = self.dtype, jnp.float32
    (h, d, k), v = self.Wk.shape, self.Wv.shape[-1]
    b, t, _ = x.shape
    # Keys and values from one 2-D matmul with the heads folded into its width: its
    # backward pass runs 1.6x faster on XLA:CPU than per-head einsums (measured).
    wkv = jnp.concatenate(
      [
        self.Wk[...].transpose(1, 0, 2).reshape(d, h * k),
        self.Wv[...].transpose(1, 0, 2).reshape(d, h * v),
      ],
      axis=1,
    ).astype(dt)
    kv = jnp.dot(x.reshape(b * t, d).astype(dt), wkv, preferred_element_type=f32).astype(dt)
    keys = jnp.tanh(kv[:, : h * k]).reshape(b, t, h, k)
    values = self.act(kv[:, h * k :]).reshape(b, t, h, v)
    g = glob.shape[-1]
    wq = self.Wq[...].transpose(1, 0, 2).reshape(g, h * k).astype(dt)
    q = jnp.tanh(jnp.dot(glob.astype(dt), wq, preferred_element_type=f32).astype(dt))
    q = q.reshape(*glob.shape[:2], h, k)
    logits = jnp.einsum('bshk,bthk->bsht', q, keys, preferred_element_type=f32) * self.scale
    own = segment_ids[:, None, :] == jnp.arange(1, glob.shape[1] + 1)[None, :, None]  # [B, S, T]
    logits = jnp.where(own[:, :, None, :], logits, -1e9)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt)
    y = jnp.einsum('bsht,bthv->bshv', probs, values, preferred_element_type=f32)
    return y.reshape(*y.shape[:2], -1).astype(dt)


class Block(nnx.Module):
  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, g, dt, eps = cfg.embed_dim, cfg.global_dim, cfg.compute_dtype, cfg.layer_norm_eps
    self.global_to_local = Dense((g,), (d,), (GLOBAL, LOCAL), rngs=rngs, dtype=dt)
    self.narrow_conv = SegmentConv(d, cfg.conv_kernel, 1, rngs=rngs, dtype=dt)
    self.wide_conv = SegmentConv(d, cfg.conv_kernel, cfg.wide_dilation, rngs=rngs, dtype=dt)
    self.local_norm1 = layer_norm(d, eps, dt, rngs, LOCAL)
    self.local_dense = Dense((d,), (d,), (LOCAL, None), rngs=rngs, dtype=dt)
    self.local_norm2 = layer_norm(d, eps, dt, rngs, LOCAL)
    self.global_dense1 = Dense((g,), (g,), (GLOBAL, None), rngs=rngs, dtype=dt)
    self.attention = GlobalAttention(cfg, rngs=rngs)
    self.global_norm1 = layer_norm(g, eps, dt, rngs, GLOBAL)
    self.global_dense2 = Dense((g,), (g,), (GLOBAL, None), rngs=rngs, dtype=dt)
    self.global_norm2 = layer_norm(g, eps, dt, rngs, GLOBAL)
    self.act = ACTIVATIONS[cfg.activation]

  def __call__(self, x, glob, segment_ids):
    act, real = self.act, (segment_ids > 0)[..., None]
    packed = glob.shape[1] > 1  # static: several proteins may share a row
    broadcast = broadcast_to_tokens(act(self.global_to_local(glob)), segment_ids)
    narrow = act(self.narrow_conv(x, segment_ids, packed))
    wide = act(self.wide_conv(x, segment_ids, packed))
    x = self.local_norm1(x + broadcast + narrow + wide)
    x = self.local_norm2(x + act(self.local_dense(x)))
    x = jnp.where(real, x, 0)  # padding stays out of every later convolution and sum
    attended = self.attention(glob, x, segment_ids)
    glob = self.global_norm1(glob + act(self.global_dense1(glob)) + attended)
    glob = self.global_norm2(glob + act(self.global_dense2(glob)))
    return x, glob


class ProteinBertEncoder(nnx.Module):
  """Tokens (and optional annotations) -> local [B, T, embed_dim], global [B, S, global_dim]."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt = cfg.compute_dtype
    self.token_embed = nnx.Embed(
      cfg.vocab_size,
      cfg.embed_dim,
      dtype=dt,
      embedding_init=shd.logical(nnx.initializers.normal(1.0), (shd.VOCAB, LOCAL)),
      rngs=rngs,
    )
    # The global track starts at act(annotations @ W + b); without annotations, act(b).
    self.global_input = Dense(
      (max(cfg.num_annotations, 1),), (cfg.global_dim,), (None, GLOBAL), rngs=rngs, dtype=dt
    )
    self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
    self.act = ACTIVATIONS[cfg.activation]

  def __call__(self, tokens, segment_ids=None, *, num_segments: int = 1, annotations=None):
    """Encodes a batch.

    Args:
      tokens: int [B, T].
      segment_ids: int [B, T], 1, 2, ... per protein, 0 on padding (default: one
        protein per row, padding where tokens == pad_id). Ignored with
        `padding='reference'`, where the whole row is one protein.
      num_segments: most proteins per row (the global track's S).
      annotations: optional float [B, S, num_annotations] (0/1 per annotation).

    Returns:
      (local [B, T, embed_dim], global [B, S, global_dim]) in the compute dtype.
    """
    cfg = self.cfg
    if cfg.padding == 'reference':
      segment_ids, num_segments = reference_segments(tokens), 1
    elif segment_ids is None:
      segment_ids = default_segments(tokens, cfg.pad_id)
    b = tokens.shape[0]
    if annotations is None or not cfg.num_annotations:
      annotations = jnp.zeros((b, num_segments, max(cfg.num_annotations, 1)), cfg.compute_dtype)
    glob = self.act(self.global_input(annotations))
    x = jnp.where((segment_ids > 0)[..., None], self.token_embed(tokens), 0)
    for block in self.blocks:
      if cfg.remat:
        x, glob = nnx.remat(lambda mdl, a, g: mdl(a, g, segment_ids))(block, x, glob)
      else:
        x, glob = block(x, glob, segment_ids)
    return x, glob


class LmHead(nnx.Module):
  """Per-token logits over the vocabulary (the reference's softmax 'output-seq' layer)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    dt = cfg.compute_dtype
    self.out = Dense((cfg.embed_dim,), (cfg.vocab_size,), (LOCAL, shd.VOCAB), rngs=rngs, dtype=dt)

  def __call__(self, x):
    return self.out(x).astype(jnp.float32)


class AnnotationHead(nnx.Module):
  """Per-protein logits over the annotations (the reference's sigmoid 'output-annotations')."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    dt = cfg.compute_dtype
    n = max(cfg.num_annotations, 1)
    self.out = Dense((cfg.global_dim,), (n,), (GLOBAL, None), rngs=rngs, dtype=dt)

  def __call__(self, glob):
    return self.out(glob).astype(jnp.float32)


# --- the family interface (ptmjax.models.model.FAMILIES) ------------------------------
Model = ProteinBertEncoder
# Random replacement over the whole vocabulary (the original's pretraining); no
# positions, so a protein is read whole; the global track is a per-protein output.
TRAITS = Traits(
  corruption='replace', whole_sequences=True, protein_outputs=('pooled',), reference_padding=True
)


def lm_head(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
  return LmHead(cfg, rngs=rngs)


def extra_heads(cfg: ModelConfig, rngs: nnx.Rngs) -> dict:
  return {'annotation_head': AnnotationHead(cfg, rngs=rngs)}


def outputs(model, tokens, segment_ids, positions, heads, num_segments, annotations) -> dict:
  """`PtmModel.__call__` for ProteinBERT: the count and annotation heads read the global
  track ('pooled'); no positions."""
  hidden, pooled = model.encoder(
    tokens, segment_ids, num_segments=num_segments, annotations=annotations
  )
  out = {'hidden': hidden, 'pooled': pooled}
  if model.cfg.padding == 'reference':  # the whole row, padding included, is the protein
    segment_ids = jnp.ones_like(tokens)
  if 'ptm' in heads:
    out['ptm'] = model.ptm_head(hidden, segment_ids)
  if 'count' in heads:
    out['count'] = model.count_head(pooled)
  if 'mlm' in heads:
    out['mlm'] = model.mlm_head(hidden)
  if 'annotations' in heads:
    out['annotations'] = model.annotation_head(pooled)
  return out
