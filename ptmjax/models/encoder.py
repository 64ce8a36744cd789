"""A BERT/ESM-family transformer encoder in Flax NNX.

One module covers the two families whose checkpoints ptmjax imports:

* ESM-2: pre-LayerNorm, rotary positions, a final LayerNorm, ESM's
  "token dropout" rescaling of the embeddings.
* BERT / ProtBert: post-LayerNorm, learned absolute positions, token-type
  embedding, LayerNorm on the embeddings.

Rows may pack several proteins: `segment_ids` (0 = padding) stop attention
across proteins and positions restart at 0 for each protein. Every parameter
carries logical axis names (`ptmjax.sharding`); compute may run in bfloat16
with float32 parameters, with attention logits, softmax and LayerNorm
statistics kept in float32.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ptmjax import sharding as shd

# ESM was trained masking 15 % of tokens, 80 % of those with <mask>; its
# embeddings are rescaled by (1 - 0.12) / (1 - observed mask ratio).
ESM_MASK_RATIO_TRAIN = 0.15 * 0.8

ACTIVATIONS = {
  'gelu': lambda x: jax.nn.gelu(x, approximate=False),  # erf GELU, as ESM and BERT use
  'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
  'relu': jax.nn.relu,
}
# Added to masked attention logits: finite, so a padding query that may attend
# to nothing gets a uniform (ignored) distribution instead of NaN.
MASK_VALUE = -1e9
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Encoder and heads. Defaults are an ESM-2-8M-sized encoder with ESM's vocabulary.

  Attributes:
    vocab_size: number of token ids.
    num_layers, embed_dim, num_heads, mlp_dim: transformer shape.
    max_len: most tokens per protein (specials included); longer proteins are
      cropped in training and covered by overlapping windows at inference.
    positions: 'rotary' (ESM-2) or 'learned' (BERT).
    pre_layer_norm: LayerNorm before attention/MLP (ESM) or after the residual (BERT).
    embed_layer_norm: LayerNorm on the embeddings (BERT).
    final_layer_norm: LayerNorm after the last layer (ESM's emb_layer_norm_after).
    num_token_types: BERT's token-type vocabulary (type 0 is always used); 0 for none.
    token_dropout: ESM's mask-token zeroing and embedding rescaling.
    layer_norm_eps: LayerNorm epsilon.
    activation: key of ACTIVATIONS.
    rope_theta: rotary base.
    dropout_rate, attention_dropout_rate: dropout in training.
    tie_embeddings: MLM decoder shares the token embedding matrix.
    pad_id, cls_id, eos_id, mask_id: special token ids (eos_id -1 when absent).
    num_ptm_types: per-residue PTM channels (ptmjax.data.NUM_TYPES).
    ptm_head: 'linear', 'mlp' (dense-gelu-LayerNorm-dense) or 'conv' (a 1-D
      convolution over residues that never crosses proteins, then linear).
    head_dim: hidden width of the 'mlp'/'conv' PTM head and of the count head.
    conv_width: kernel width of the 'conv' head (odd).
    dtype: compute dtype ('float32' or 'bfloat16'); parameters stay float32.
    remat: recompute each layer's activations in the backward pass.
    attention: 'xla' (one batched einsum-softmax-einsum, what XLA fuses well on
      GPU/TPU), 'rows' (blocks of heads of one batch row at a time with a
      flash-style backward that recomputes the probabilities: 2-5x faster and
      far less memory on CPU, where XLA's batched matmuls over [B, H, T, T]
      run out of cache), or
      'auto' (rows on CPU, xla elsewhere). Same numbers either way.
  """

  vocab_size: int = 33
  num_layers: int = 6
  embed_dim: int = 320
  num_heads: int = 20
  mlp_dim: int = 1280
  max_len: int = 1026
  positions: str = 'rotary'
  pre_layer_norm: bool = True
  embed_layer_norm: bool = False
  final_layer_norm: bool = True
  num_token_types: int = 0
  token_dropout: bool = True
  layer_norm_eps: float = 1e-5
  activation: str = 'gelu'
  rope_theta: float = 10000.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  tie_embeddings: bool = True
  pad_id: int = 1
  cls_id: int = 0
  eos_id: int = 2
  mask_id: int = 32
  num_ptm_types: int = 16
  ptm_head: str = 'linear'
  head_dim: int = 128
  conv_width: int = 9
  dtype: str = 'float32'
  remat: bool = False
  attention: str = 'auto'

  def __post_init__(self):
    if self.embed_dim % self.num_heads:
      raise ValueError(
        f'embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}'
      )
    if self.positions not in ('rotary', 'learned'):
      raise ValueError(f"positions must be 'rotary' or 'learned', not {self.positions!r}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation {self.activation!r} not in {sorted(ACTIVATIONS)}')
    if self.dtype not in DTYPES:
      raise ValueError(f'dtype {self.dtype!r} not in {sorted(DTYPES)}')
    if self.ptm_head not in ('linear', 'mlp', 'conv'):
      raise ValueError(f"ptm_head must be 'linear', 'mlp' or 'conv', not {self.ptm_head!r}")
    if self.attention not in ('auto', 'xla', 'rows'):
      raise ValueError(f"attention must be 'auto', 'xla' or 'rows', not {self.attention!r}")
    if self.conv_width % 2 == 0:
      raise ValueError(f'conv_width must be odd, got {self.conv_width}')

  @property
  def head_size(self) -> int:
    return self.embed_dim // self.num_heads

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  def replace(self, **kwargs) -> ModelConfig:
    return dataclasses.replace(self, **kwargs)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f'unknown model config keys {unknown}')
    return cls(**dict(d))


# --- building blocks ---------------------------------------------------------------
_INIT = nnx.initializers.normal(0.02)  # BERT/ESM initialisation


class Dense(nnx.Module):
  """x[..., *in_shape] -> [..., *out_shape] with a kernel of shape in_shape + out_shape.

  Keeping heads and head width as separate kernel axes lets the `heads` and
  `kv` logical names shard them independently.
  """

  def __init__(
    self,
    in_shape: Sequence[int],
    out_shape: Sequence[int],
    names: Sequence[str | None],
    *,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    use_bias: bool = True,
  ):
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    self.num_in = len(in_shape)
    self.dtype = dtype
    self.kernel = nnx.Param(shd.logical(_INIT, names)(rngs.params(), in_shape + out_shape))
    self.bias = (
      nnx.Param(shd.logical(nnx.initializers.zeros_init(), names[self.num_in :])(None, out_shape))
      if use_bias
      else None
    )

  def __call__(self, x):
    kernel = self.kernel[...].astype(self.dtype)
    axes = tuple(range(x.ndim - self.num_in, x.ndim)), tuple(range(self.num_in))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel, (axes, ((), ())))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


def layer_norm(dim: int, eps: float, dtype, rngs: nnx.Rngs, name: str | None = shd.EMBED):
  # flax computes the mean and variance in float32 even for bfloat16 inputs.
  return nnx.LayerNorm(
    dim,
    epsilon=eps,
    dtype=dtype,
    scale_init=shd.logical(nnx.initializers.ones_init(), (name,)),
    bias_init=shd.logical(nnx.initializers.zeros_init(), (name,)),
    rngs=rngs,
  )


def default_segments(tokens, pad_id: int):
  """One protein per row: segment 1 on real tokens, 0 on padding."""
  return (tokens != pad_id).astype(jnp.int32)


def segment_positions(segment_ids):
  """Positions that restart at 0 at each protein of a packed row."""
  length = segment_ids.shape[-1]
  idx = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), segment_ids.shape)
  starts = jnp.concatenate(
    [jnp.ones_like(segment_ids[..., :1], bool), segment_ids[..., 1:] != segment_ids[..., :-1]],
    axis=-1,
  )
  return idx - jax.lax.cummax(jnp.where(starts, idx, 0), axis=segment_ids.ndim - 1)


def rotary_tables(positions, head_size: int, theta: float):
  """cos, sin [B, T, head_size] for ESM's rotary embedding (halves, not interleaved).

  Looked up in a table of every position below T built with NumPy (float32, as ESM
  computes it), a constant of the compiled step: computed in the step, XLA:CPU fuses
  cos and sin into the rotation and recomputes them for every head.
  """
  length = positions.shape[-1]
  inv_freq = (1.0 / (theta ** (np.arange(0, head_size, 2, dtype=np.float32) / head_size))).astype(
    np.float32
  )
  freqs = np.arange(length, dtype=np.float32)[:, None] * inv_freq
  emb = np.concatenate([freqs, freqs], axis=-1)
  cos, sin = jnp.asarray(np.cos(emb)), jnp.asarray(np.sin(emb))
  return cos[positions], sin[positions]


def apply_rotary(x, cos, sin):
  """x [B, T, H, K]; rotation in float32, cast back to x's dtype."""
  xf = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
  return (xf * cos[:, :, None] + rotated * sin[:, :, None]).astype(x.dtype)


# Bytes of the [heads, T, T] float32 block the CPU attention works on at a time
# (a few times a core's L2). Measured on 2 EPYC cores (ESM-2-8M training step):
# 2, 4 or 8 MiB are equal within noise at 256-1,024 tokens; whole rows of 20
# heads are 10-25 % slower at 512, and one head at a time 2x slower for tiny models.
BLOCK_BYTES = 4 << 20


def _heads_per_block(num_heads: int, length: int, budget: int) -> int:
  """The most heads (a divisor of num_heads, at least 1) whose [T, T] blocks fit `budget`."""
  fits = max(1, budget // (4 * length * length))
  return max(g for g in range(1, num_heads + 1) if num_heads % g == 0 and g <= fits)


def _blocks(x, g: int):
  """[B, H, T, K] -> [B * H / g, g, T, K] (free: a reshape of contiguous heads)."""
  b, h = x.shape[:2]
  return x.reshape(b * h // g, g, *x.shape[2:])


@jax.custom_vjp
def rows_attention(q, k, v, bias):
  """softmax(q k^T + bias) v for q, k, v [B, T, H, K] and bias [B, 1, T, T], a few
  heads of one batch row at a time.

  On CPU, XLA runs the batched version as matmuls over the whole [B, H, T, T]
  block, far out of cache, and with heads in the middle of [B, T, H, K] its
  contractions need transposes. Here heads go first ([B, H, T, K], one copy),
  and a loop walks blocks of heads whose [T, T] scores stay in cache. The
  backward pass recomputes the probabilities from the saved log-sum-exp (as
  flash attention does) instead of keeping [B, H, T, T], and works on
  transposed scores [s, q] so that every product is one XLA:CPU runs fast
  (a contraction over the leading axis of a [T, T] block is 4x slower).
  """
  return _rows_fwd(q, k, v, bias)[0]


def _rows_fwd(q, k, v, bias):
  b, t, h, _ = q.shape
  g = _heads_per_block(h, t, BLOCK_BYTES)
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # [B, H, T, K]
  row = jnp.arange(b * h // g) // (h // g)

  def block(a):
    q, k, v, r = a  # [g, T, K]
    logits = jnp.einsum('gqk,gsk->gqs', q, k, preferred_element_type=jnp.float32)
    logits = logits + jax.lax.dynamic_index_in_dim(bias, r, keepdims=False)
    peak = logits.max(-1, keepdims=True)
    e = jnp.exp(logits - peak)
    total = e.sum(-1, keepdims=True)
    out = jnp.einsum('gqs,gsk->gqk', e.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return (out / total).astype(q.dtype), (peak + jnp.log(total))[..., 0]  # normalise [T, K]

  out, lse = jax.lax.map(block, (_blocks(q, g), _blocks(k, g), _blocks(v, g), row))
  out = out.reshape(q.shape)
  return out.transpose(0, 2, 1, 3), (q, k, v, bias, out, lse.reshape(b, h, t))


def _rows_bwd(res, d_out):
  q, k, v, bias, out, lse = res  # q, k, v, out [B, H, T, K], lse [B, H, T]
  b, h, t, kd = q.shape
  g = _heads_per_block(h, t, BLOCK_BYTES)
  f32 = jnp.float32
  d_out = d_out.transpose(0, 2, 1, 3)
  delta = jnp.einsum('bhqk,bhqk->bhq', d_out.astype(f32), out.astype(f32))
  k_t = k.transpose(0, 1, 3, 2)  # [B, H, K, T]
  bias_t = bias.swapaxes(-1, -2)  # [B, 1, s, q]
  row = jnp.arange(b * h // g) // (h // g)

  def block(a):
    *arrays, r = a
    q, k, k_t, v, d_out, lse, delta = (x.astype(f32) for x in arrays)
    s_t = jnp.einsum('gsk,gqk->gsq', k, q) + jax.lax.dynamic_index_in_dim(bias_t, r, keepdims=False)
    p_t = jnp.exp(s_t - lse[:, None, :])  # probabilities, transposed: [g, s, q]
    dv = jnp.einsum('gsq,gqk->gsk', p_t, d_out)
    ds_t = p_t * (jnp.einsum('gsk,gqk->gsq', v, d_out) - delta[:, None, :])
    dk = jnp.einsum('gsq,gqk->gsk', ds_t, q)
    dq_t = jnp.einsum('gks,gsq->gkq', k_t, ds_t)  # dq transposed: [g, K, q]
    return dq_t, dk, dv

  n = b * h // g
  blocks = (_blocks(q, g), _blocks(k, g), _blocks(k_t, g), _blocks(v, g), _blocks(d_out, g))
  dq_t, dk, dv = jax.lax.map(block, (*blocks, lse.reshape(n, g, t), delta.reshape(n, g, t), row))
  dq = dq_t.reshape(b, h, kd, t).transpose(0, 3, 1, 2)
  dk, dv = (x.reshape(b, h, t, kd).transpose(0, 2, 1, 3) for x in (dk, dv))
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), jnp.zeros_like(bias)


rows_attention.defvjp(_rows_fwd, _rows_bwd)


class Attention(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, h, k, dt = cfg.embed_dim, cfg.num_heads, cfg.head_size, cfg.compute_dtype
    names = (shd.EMBED, shd.HEADS, shd.KV)
    self.query = Dense((d,), (h, k), names, rngs=rngs, dtype=dt)
    self.key = Dense((d,), (h, k), names, rngs=rngs, dtype=dt)
    self.value = Dense((d,), (h, k), names, rngs=rngs, dtype=dt)
    self.out = Dense((h, k), (d,), (shd.HEADS, shd.KV, shd.EMBED), rngs=rngs, dtype=dt)
    self.dropout = nnx.Dropout(cfg.attention_dropout_rate, rngs=rngs)
    self.rotary = cfg.positions == 'rotary'
    self.head_size = k
    self.theta = cfg.rope_theta
    self.impl = cfg.attention

  def __call__(self, x, bias, positions):
    # ESM scales the query before the rotation; for BERT the order is immaterial.
    q = self.query(x) * jnp.asarray(self.head_size**-0.5, x.dtype)
    k, v = self.key(x), self.value(x)
    if self.rotary:
      cos, sin = rotary_tables(positions, self.head_size, self.theta)
      q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    impl = self.impl
    if impl == 'auto':
      impl = 'rows' if jax.default_backend() == 'cpu' else 'xla'
    if impl == 'rows' and (self.dropout.deterministic or not self.dropout.rate):
      return self.out(rows_attention(q, k, v, bias))
    # Also the path for attention dropout in training (ProtBert's 0.1): it needs the probabilities.
    logits = jnp.einsum('bqhk,bshk->bhqs', q, k, preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(logits + bias, axis=-1).astype(x.dtype)
    probs = self.dropout(probs)
    return self.out(jnp.einsum('bhqs,bshk->bqhk', probs, v))


class Mlp(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dt = cfg.compute_dtype
    self.wi = Dense((cfg.embed_dim,), (cfg.mlp_dim,), (shd.EMBED, shd.MLP), rngs=rngs, dtype=dt)
    self.wo = Dense((cfg.mlp_dim,), (cfg.embed_dim,), (shd.MLP, shd.EMBED), rngs=rngs, dtype=dt)
    self.act = ACTIVATIONS[cfg.activation]

  def __call__(self, x):
    return self.wo(self.act(self.wi(x)))


class EncoderLayer(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dt = cfg.compute_dtype
    self.attention = Attention(cfg, rngs)
    self.attention_norm = layer_norm(cfg.embed_dim, cfg.layer_norm_eps, dt, rngs)
    self.mlp = Mlp(cfg, rngs)
    self.mlp_norm = layer_norm(cfg.embed_dim, cfg.layer_norm_eps, dt, rngs)
    self.dropout = nnx.Dropout(cfg.dropout_rate, rngs=rngs)
    self.pre_layer_norm = cfg.pre_layer_norm

  def __call__(self, x, bias, positions):
    if self.pre_layer_norm:
      x = x + self.dropout(self.attention(self.attention_norm(x), bias, positions))
      return x + self.dropout(self.mlp(self.mlp_norm(x)))
    x = self.attention_norm(x + self.dropout(self.attention(x, bias, positions)))
    return self.mlp_norm(x + self.dropout(self.mlp(x)))


def _per_segment_mean(values, segment_ids):
  """For each token, the mean of `values` over the real tokens of its segment; O(B*T)."""
  b, t = segment_ids.shape
  # Segment s of row r gets the global id r * (t + 1) + s; padding (s = 0) is ignored.
  ids = (jnp.arange(b)[:, None] * (t + 1) + segment_ids).reshape(-1)
  real = (segment_ids > 0).reshape(-1).astype(jnp.float32)
  num = jax.ops.segment_sum(values.reshape(-1).astype(jnp.float32) * real, ids, b * (t + 1))
  den = jax.ops.segment_sum(real, ids, b * (t + 1))
  return (num / jnp.maximum(den, 1))[ids].reshape(b, t)


class Encoder(nnx.Module):
  """Tokens -> contextual embeddings [B, T, embed_dim]."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt = cfg.compute_dtype
    self.token_embed = nnx.Embed(
      cfg.vocab_size,
      cfg.embed_dim,
      dtype=dt,
      embedding_init=shd.logical(_INIT, (shd.VOCAB, shd.EMBED)),
      rngs=rngs,
    )
    self.position_embed = (
      nnx.Embed(
        cfg.max_len,
        cfg.embed_dim,
        dtype=dt,
        embedding_init=shd.logical(_INIT, (None, shd.EMBED)),
        rngs=rngs,
      )
      if cfg.positions == 'learned'
      else None
    )
    self.token_type_embed = (
      nnx.Embed(
        cfg.num_token_types,
        cfg.embed_dim,
        dtype=dt,
        embedding_init=shd.logical(_INIT, (None, shd.EMBED)),
        rngs=rngs,
      )
      if cfg.num_token_types
      else None
    )
    self.embed_norm = (
      layer_norm(cfg.embed_dim, cfg.layer_norm_eps, dt, rngs) if cfg.embed_layer_norm else None
    )
    self.embed_dropout = nnx.Dropout(cfg.dropout_rate, rngs=rngs)
    self.layers = nnx.List([EncoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = (
      layer_norm(cfg.embed_dim, cfg.layer_norm_eps, dt, rngs) if cfg.final_layer_norm else None
    )

  def embed(self, tokens, segment_ids, positions):
    cfg = self.cfg
    x = self.token_embed(tokens)
    real = segment_ids > 0
    if cfg.token_dropout:
      is_mask = tokens == cfg.mask_id
      x = jnp.where(is_mask[..., None], 0, x)
      # Mask ratio per protein (ESM computes it per row; a packed row holds
      # several proteins, and per protein is what a row of one protein gets).
      ratio = _per_segment_mean(is_mask, segment_ids)
      scale = (1 - ESM_MASK_RATIO_TRAIN) / (1 - ratio)
      x = (x.astype(jnp.float32) * scale[..., None]).astype(x.dtype)
    if self.position_embed is not None:
      x = x + self.position_embed(positions)
    if self.token_type_embed is not None:
      x = x + self.token_type_embed.embedding[0].astype(x.dtype)
    if self.embed_norm is not None:
      x = self.embed_norm(x)
    x = jnp.where(real[..., None], x, 0)
    return self.embed_dropout(x)

  def __call__(self, tokens, segment_ids=None, positions=None):
    """Encodes a batch.

    Args:
      tokens: int [B, T].
      segment_ids: int [B, T], 1, 2, ... per protein of a packed row, 0 on
        padding. Default: one protein per row, padding where tokens == pad_id.
      positions: int [B, T]. Default: restart at 0 for each segment.

    Returns:
      [B, T, embed_dim] in the compute dtype.
    """
    cfg = self.cfg
    if segment_ids is None:
      segment_ids = default_segments(tokens, cfg.pad_id)
    if positions is None:
      positions = segment_positions(segment_ids)
    if cfg.positions == 'learned' and tokens.shape[1] > cfg.max_len:
      raise ValueError(f'{tokens.shape[1]} tokens > max_len {cfg.max_len} of learned positions')
    x = self.embed(tokens, segment_ids, positions)
    # Additive mask: attend only within the same protein, never to padding.
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
    bias = jnp.where(allowed, 0.0, MASK_VALUE)[:, None].astype(jnp.float32)
    for layer in self.layers:
      if cfg.remat:
        x = nnx.remat(lambda mdl, h: mdl(h, bias, positions))(layer, x)
      else:
        x = layer(x, bias, positions)
    if self.final_norm is not None:
      x = self.final_norm(x)
    return x


def num_params(cfg: ModelConfig) -> int:
  """Parameter count of the model (encoder and heads), without allocating it."""
  from ptmjax.models.model import PtmModel

  abstract = nnx.eval_shape(lambda: PtmModel(cfg, rngs=nnx.Rngs(0)))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
