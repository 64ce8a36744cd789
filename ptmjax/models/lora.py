"""Low-rank adapters (LoRA) on chosen dense layers, for fine-tuning big imported encoders.

    ptmjax train --config yaam --workdir runs/yaam_lora \
      --config.init_from.path=models/esm2_t33_650M --config.lora.rank=8

`add_adapters` puts a `flax.nnx.LoRA` (A: in x r, B: r x out, B zero so training starts
from the imported model) beside every `Dense` whose path matches `lora.targets`; the
trainer then optimises only the adapters and the parameters `lora.train` names (the
PTM head by default): the optimizer state is adapter-sized. `merge_adapters` folds
W + (alpha / r) A B into each kernel and drops the adapters, so the final model folder
has the plain model's parameters and loads anywhere a model folder does.
"""

from __future__ import annotations

import math
import re

import jax.numpy as jnp
from flax import nnx

from ptmjax.models.layers import Dense
from ptmjax.models.model import path_str

# Parameters of an adapter: '<dense path>/lora/lora_a' and '.../lora_b'.
ADAPTER_RE = r'.*/lora/lora_[ab]'


def _denses(model: nnx.Module):
  for path, module in nnx.iter_graph(model):
    if isinstance(module, Dense):
      # Joined as is: `path_str` drops a trailing 'value' (a Variable's), which here is
      # the attention's value projection.
      yield '/'.join(str(k) for k in path), module


def add_adapters(model: nnx.Module, targets, rank: int, alpha: float, rngs: nnx.Rngs) -> list:
  """Adds a rank-`rank` adapter to each `Dense` whose path (e.g.
  'encoder/layers/3/attention/query') fully matches one of `targets`; returns their paths."""
  patterns = [re.compile(t) for t in targets]
  chosen = [(p, m) for p, m in _denses(model) if any(r.fullmatch(p) for r in patterns)]
  if not chosen:
    names = [p for p, _ in _denses(model)]
    raise ValueError(
      f'lora.targets {list(targets)} match no dense layer (they look like {names[:3]})'
    )
  for _, module in chosen:
    n_in = math.prod(module.kernel.shape[: module.num_in])
    n_out = math.prod(module.kernel.shape[module.num_in :])
    module.lora = nnx.data(nnx.LoRA(n_in, rank, n_out, rngs=rngs, dtype=module.dtype))
    module.lora_scale = alpha / rank
  return [p for p, _ in chosen]


def merge_adapters(model: nnx.Module) -> list:
  """Folds every adapter into its kernel and removes it (in place); returns their paths."""
  merged = []
  for path, module in list(_denses(model)):
    if getattr(module, 'lora', None) is None:
      continue
    a, b = module.lora.lora_a[...], module.lora.lora_b[...]
    delta = (a.astype(jnp.float32) @ b.astype(jnp.float32)) * module.lora_scale
    kernel = module.kernel[...]
    module.kernel[...] = (kernel.astype(jnp.float32) + delta.reshape(kernel.shape)).astype(
      kernel.dtype
    )
    module.lora = nnx.data(None)
    merged.append(path)
  return merged


def trainable(train):
  """The nnx filter of what a LoRA run trains: the adapters and the parameters whose
  path fully matches one of `train` (regexes)."""
  patterns = [re.compile(t) for t in train]

  def keep(path, value) -> bool:
    if isinstance(value, nnx.LoRAParam):
      return True
    return isinstance(value, nnx.Param) and any(r.fullmatch(path_str(path)) for r in patterns)

  return keep
