"""Logical axis names, the rules that map them to mesh axes, and mesh helpers.

Model code names *logical* axes on every parameter (`EMBED`, `MLP`, ...); only
the config's rules decide which mesh axis (`data`, `fsdp`, `tensor`) shards
them. Nothing in `ptmjax.models` mentions a mesh axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

P = jax.sharding.PartitionSpec

# Weights.
EMBED = 'embed'  # model width
MLP = 'mlp'  # feed-forward hidden width
HEADS = 'heads'  # attention heads
KV = 'kv'  # width of one head
VOCAB = 'vocab'  # token vocabulary
# Activations.
ACT_BATCH = 'act_batch'
ACT_LEN = 'act_len'
ACT_EMBED = 'act_embed'

# FSDP over `fsdp`, Megatron-style tensor parallelism over `tensor`, batch over
# `data` and `fsdp`. A name missing from the rules is replicated.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
  (EMBED, 'fsdp'),
  (MLP, 'tensor'),
  (HEADS, 'tensor'),
  (KV, None),
  (VOCAB, 'tensor'),
  (ACT_BATCH, ('data', 'fsdp')),
  (ACT_LEN, None),
  (ACT_EMBED, None),
)


def logical(init, names: Sequence[str | None]):
  """Wraps an initializer so its parameter carries logical axis `names`.

  `eager_sharding=False`: the names are metadata only; placement happens when
  the state is created under `jax.jit(..., out_shardings=...)`, so a model can
  also be built on one device with no mesh at all.
  """
  return nnx.with_metadata(init, out_sharding=tuple(names), eager_sharding=False)


def logical_to_mesh(spec: P, rules, mesh_axes: Sequence[str] | None = None) -> P:
  """Maps a PartitionSpec of logical names to one of mesh axes via `rules`.

  Mesh axes not in `mesh_axes` (when given) are dropped, so one set of rules
  serves a `data`-only mesh and a `data x fsdp x tensor` one.
  """
  table = dict(rules)
  used, out = set(), []
  for name in spec:
    axes = table.get(name) if name is not None else None
    flat = (axes,) if isinstance(axes, str) else tuple(axes or ())
    if mesh_axes is not None:
      flat = tuple(a for a in flat if a in mesh_axes)
    # A mesh axis may shard only one dimension of an array.
    if any(a in used for a in flat):
      flat = ()
    used.update(flat)
    out.append(None if not flat else flat[0] if len(flat) == 1 else flat)
  return P(*out)


def make_mesh(shape: dict[str, int], devices=None) -> jax.sharding.Mesh:
  """A mesh with `Auto` axes (explicit axes break the embedding gather; see STACK.md).

  A size of -1 takes the remaining devices.
  """
  devices = np.asarray(jax.devices() if devices is None else devices)
  sizes = dict(shape)
  free = [k for k, v in sizes.items() if v == -1]
  if len(free) > 1:
    raise ValueError(f'at most one mesh axis may be -1: {shape}')
  known = int(np.prod([v for v in sizes.values() if v != -1]))
  if free:
    sizes[free[0]] = devices.size // known
  if int(np.prod(list(sizes.values()))) != devices.size:
    raise ValueError(f'mesh {sizes} does not use the {devices.size} devices')
  # jax.make_mesh orders devices by the physical topology (TPU torus, NVLink islands),
  # so inner axes (tensor) land on the closest chips.
  return jax.make_mesh(
    tuple(sizes.values()),
    tuple(sizes),
    axis_types=(jax.sharding.AxisType.Auto,) * len(sizes),
    devices=list(devices.flat),
  )


def fit_spec(spec: P, shape, mesh: jax.sharding.Mesh) -> P:
  """Drops mesh axes from dimensions they do not divide (e.g. a 33-token vocabulary on 2 shards)."""
  if len(spec) > len(shape):
    # A leaf with fewer dimensions than its parameter's names: the optimizer state of a
    # frozen parameter (optax keeps a scalar placeholder there). Replicated.
    return P()
  out = []
  for axes, size in zip(tuple(spec) + (None,) * (len(shape) - len(spec)), shape, strict=True):
    flat = (axes,) if isinstance(axes, str) else tuple(axes or ())
    if size % int(np.prod([mesh.shape[a] for a in flat] or [1])):
      flat = ()
    out.append(None if not flat else flat[0] if len(flat) == 1 else flat)
  return P(*out)


def state_sharding(state, mesh: jax.sharding.Mesh, rules):
  """NamedShardings for a (possibly abstract) nnx.State whose params carry logical names.

  A dimension that a mesh axis does not divide is replicated instead.
  """
  specs = nnx.get_partition_spec(state)

  def one(spec, leaf):
    mesh_spec = logical_to_mesh(spec, rules, mesh.axis_names)
    return jax.sharding.NamedSharding(mesh, fit_spec(mesh_spec, np.shape(leaf), mesh))

  return jax.tree.map(one, specs, state, is_leaf=lambda x: isinstance(x, P))
