"""Self-attention: the batched XLA path and a CPU kernel on blocks of heads.

`Attention` picks by `ModelConfig.attention`: 'xla' is one batched
einsum-softmax-einsum, which XLA fuses well on GPU/TPU; 'rows' is
`rows_attention` below, written for XLA:CPU (see its docstring and the
measurements in benchmarks/README.md); 'auto' takes rows on CPU. Both give the
same outputs and gradients (tests/test_models.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ptmjax import sharding as shd
from ptmjax.models.config import ModelConfig
from ptmjax.models.layers import Dense, apply_rotary, rotary_tables

# Added to masked attention logits: finite, so a padding query that may attend
# to nothing gets a uniform (ignored) distribution instead of NaN.
MASK_VALUE = -1e9

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
