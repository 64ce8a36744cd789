"""AdamW with warmup + cosine/linear decay, clipping, accumulation, layer-wise LR decay,
and freezing by regex over parameter paths (inside the optimizer, as big_vision does).

Parameter paths are '/'-joined, e.g. 'encoder/layers/3/attention/query/kernel'
or 'ptm_head/out/kernel'.
"""

from __future__ import annotations

import re

import jax
import optax

from ptmjax.models.model import param_paths, path_str


def schedule(optim) -> optax.Schedule:
  """Linear warmup from 0 to `lr`, then 'cosine', 'linear' (to `end_lr_ratio` x lr) or 'constant'."""
  total, warmup = int(optim.total_steps), int(optim.warmup_steps)
  end = optim.lr * optim.get('end_lr_ratio', 0.0)
  decay = max(total - warmup, 1)
  after = {
    'cosine': optax.cosine_decay_schedule(optim.lr, decay, alpha=optim.get('end_lr_ratio', 0.0)),
    'linear': optax.linear_schedule(optim.lr, end, decay),
    'constant': optax.constant_schedule(optim.lr),
  }[optim.get('decay', 'cosine')]
  return optax.join_schedules([optax.linear_schedule(0.0, optim.lr, warmup), after], [warmup])


def _layer_of(path: str, num_layers: int) -> int:
  """Depth for layer-wise decay: embeddings 0, layer i -> i + 1, heads num_layers + 1."""
  # Transformer layers are encoder/layers/i, ProteinBERT blocks encoder/blocks/i.
  m = re.match(r'encoder/(?:layers|blocks)/(\d+)/', path)
  if m:
    return int(m.group(1)) + 1
  if path.startswith('encoder/') and not path.startswith('encoder/final_norm'):
    return 0
  return num_layers + 1


def make_optimizer(optim, params, num_layers: int) -> optax.GradientTransformation:
  """The optax chain for `optim` (a ConfigDict) over `params` (an nnx.State of Params).

  optim keys: lr, total_steps, warmup_steps, decay, end_lr_ratio, weight_decay,
  b1, b2, eps, grad_clip_norm, grad_accum_steps, layer_decay (1.0 = off),
  freeze (regex list), freeze_steps (0 = always while listed).
  """
  sched = schedule(optim)
  if hasattr(params, 'to_pure_dict'):
    params = params.to_pure_dict()
  paths = param_paths(params)

  def adamw(lr_scale=1.0):
    return optax.adamw(
      lambda step: sched(step) * lr_scale,
      b1=optim.get('b1', 0.9),
      b2=optim.get('b2', 0.999),
      eps=optim.get('eps', 1e-8),
      weight_decay=optim.get('weight_decay', 0.0),
      # No decay on biases and LayerNorm scales (1-D parameters).
      mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
    )

  layer_decay = optim.get('layer_decay', 1.0)
  freeze = [re.compile(r) for r in optim.get('freeze', ())]
  freeze_steps = int(optim.get('freeze_steps', 0))

  def label(path: str) -> str:
    if any(r.fullmatch(path) for r in freeze):
      return 'frozen'
    return f'depth{_layer_of(path, num_layers)}' if layer_decay != 1.0 else 'train'

  labels_flat = [label(p) for p in paths]
  unmatched = [r.pattern for r in freeze if not any(r.fullmatch(p) for p in paths)]
  if unmatched:
    raise ValueError(
      f'freeze patterns match no parameter: {unmatched} (paths look like {paths[0]})'
    )

  def labels(tree):
    return jax.tree_util.tree_map_with_path(lambda p, _: label(path_str(p)), tree)

  transforms = {}
  for name in set(labels_flat) - {'frozen'}:
    scale = layer_decay ** (num_layers + 1 - int(name[5:])) if name.startswith('depth') else 1.0
    transforms[name] = adamw(scale)
  if 'frozen' in labels_flat:
    # Frozen for `freeze_steps` (then trained like the rest), or for good when 0.
    transforms['frozen'] = (
      optax.set_to_zero()
      if not freeze_steps
      else optax.chain(adamw(1.0), _zero_until(freeze_steps))
    )
  tx = optax.multi_transform(transforms, labels)
  clip = optim.get('grad_clip_norm', 0.0)
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  accum = int(optim.get('grad_accum_steps', 1))
  if accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accum)
  return tx


def _zero_until(steps: int) -> optax.GradientTransformation:
  """Zeroes updates for the first `steps` applications."""

  def init(params):
    del params
    return {'count': jax.numpy.zeros([], jax.numpy.int32)}

  def update(updates, state, params=None):
    del params
    keep = state['count'] >= steps
    updates = jax.tree.map(lambda u: jax.numpy.where(keep, u, 0), updates)
    return updates, {'count': state['count'] + 1}

  return optax.GradientTransformation(init, update)
