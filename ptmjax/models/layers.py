"""Building blocks of the encoders and heads: dense layers with logical axes, LayerNorm,
segment helpers for packed rows, rotary position tables, the MLP block.

Every parameter carries logical axis names (`ptmjax.sharding`), which the
config's rules map onto mesh axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ptmjax import sharding as shd
from ptmjax.models.config import ACTIVATIONS, ModelConfig

INIT = nnx.initializers.normal(0.02)  # BERT/ESM initialisation


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
    self.kernel = nnx.Param(shd.logical(INIT, names)(rngs.params(), in_shape + out_shape))
    self.bias = (
      nnx.Param(shd.logical(nnx.initializers.zeros_init(), names[self.num_in :])(None, out_shape))
      if use_bias
      else None
    )
    self.lora = nnx.data(
      None
    )  # an nnx.LoRA adapter (`ptmjax.models.lora`), when fine-tuning with one
    self.lora_scale = 1.0

  def __call__(self, x):
    kernel = self.kernel[...].astype(self.dtype)
    axes = tuple(range(x.ndim - self.num_in, x.ndim)), tuple(range(self.num_in))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel, (axes, ((), ())))
    if self.lora is not None:
      flat = x.reshape(*x.shape[: x.ndim - self.num_in], -1)
      y = y + (self.lora(flat) * self.lora_scale).reshape(y.shape).astype(y.dtype)
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


class Mlp(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dt = cfg.compute_dtype
    self.wi = Dense((cfg.embed_dim,), (cfg.mlp_dim,), (shd.EMBED, shd.MLP), rngs=rngs, dtype=dt)
    self.wo = Dense((cfg.mlp_dim,), (cfg.embed_dim,), (shd.MLP, shd.EMBED), rngs=rngs, dtype=dt)
    self.act = ACTIVATIONS[cfg.activation]

  def __call__(self, x):
    return self.wo(self.act(self.wi(x)))
