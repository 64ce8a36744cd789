"""The optimizer chain: freezing by regex, layer-wise LR decay, accumulation, schedule."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ptmjax.models.model import param_paths
from ptmjax.training import optimizer


def _optim(**kw):
  base = dict(
    lr=0.1,
    total_steps=10,
    warmup_steps=0,
    decay='constant',
    weight_decay=0.0,
    grad_clip_norm=0.0,
    grad_accum_steps=1,
    layer_decay=1.0,
    freeze=(),
    freeze_steps=0,
  )
  return ml_collections.ConfigDict({**base, **kw})


def _params():
  """A model-shaped tree: embeddings, two layers, a head."""
  rng = np.random.default_rng(0)

  def w(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)

  return {
    'encoder': {
      'embed': {'embedding': w(5, 4)},
      'layers': {'0': {'mlp': {'kernel': w(4, 4)}}, '1': {'mlp': {'kernel': w(4, 4)}}},
      'final_norm': {'scale': w(4)},
    },
    'ptm_head': {'out': {'kernel': w(4, 3)}},
  }


def _run(optim, steps, grads_fn=None):
  params = _params()
  tx = optimizer.make_optimizer(optim, params, num_layers=2)
  state = tx.init(params)
  history = [params]
  for i in range(steps):
    grads = grads_fn(i) if grads_fn else jax.tree.map(jnp.ones_like, params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return history


def _changed(a, b, path):
  get = lambda t: param_paths(t).index(path)  # noqa: E731
  return not np.allclose(jax.tree.leaves(a)[get(a)], jax.tree.leaves(b)[get(b)])


def test_freeze_for_good_and_for_the_first_steps():
  h = _run(_optim(freeze=('encoder/.*',)), 3)
  assert not _changed(h[0], h[3], 'encoder/layers/0/mlp/kernel')
  assert not _changed(h[0], h[3], 'encoder/embed/embedding')
  assert _changed(h[0], h[1], 'ptm_head/out/kernel')

  h = _run(_optim(freeze=('encoder/.*',), freeze_steps=2), 3)
  assert not _changed(h[0], h[2], 'encoder/layers/1/mlp/kernel')
  assert _changed(h[2], h[3], 'encoder/layers/1/mlp/kernel')
  assert _changed(h[0], h[1], 'ptm_head/out/kernel')


def test_freeze_pattern_that_matches_nothing_is_an_error():
  with pytest.raises(ValueError, match='match no parameter'):
    optimizer.make_optimizer(_optim(freeze=('decoder/.*',)), _params(), num_layers=2)


def test_layer_decay_scales_the_step_per_depth():
  """Adam's first step has magnitude lr x scale for every element (g / |g| = 1)."""
  h = _run(_optim(layer_decay=0.5), 1)
  paths = param_paths(h[0])
  step = {
    p: np.abs(np.asarray(b - a)).mean()
    for p, a, b in zip(paths, jax.tree.leaves(h[0]), jax.tree.leaves(h[1]), strict=True)
  }
  # depth: embeddings 0, layer i -> i + 1, heads and the final norm 3 (= num_layers + 1).
  np.testing.assert_allclose(step['ptm_head/out/kernel'], 0.1, rtol=1e-4)
  np.testing.assert_allclose(step['encoder/final_norm/scale'], 0.1, rtol=1e-4)
  np.testing.assert_allclose(step['encoder/layers/1/mlp/kernel'], 0.05, rtol=1e-4)
  np.testing.assert_allclose(step['encoder/layers/0/mlp/kernel'], 0.025, rtol=1e-4)
  np.testing.assert_allclose(step['encoder/embed/embedding'], 0.0125, rtol=1e-4)


def test_accumulation_equals_the_mean_gradient():
  """Two micro-steps of grads g1, g2 with accumulation == one step with (g1 + g2) / 2."""
  rng = np.random.default_rng(1)
  gs = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), _params())]
  gs.append(jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), _params()))
  accum = _run(_optim(grad_accum_steps=2, weight_decay=0.1), 2, lambda i: gs[i])
  mean = jax.tree.map(lambda a, b: (a + b) / 2, *gs)
  plain = _run(_optim(weight_decay=0.1), 1, lambda i: mean)
  for a, b in zip(jax.tree.leaves(accum[1]), jax.tree.leaves(accum[0]), strict=True):
    np.testing.assert_array_equal(a, b)  # nothing applied after the first micro-step
  for a, b in zip(jax.tree.leaves(accum[2]), jax.tree.leaves(plain[1]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_schedule_warmup_then_cosine():
  s = optimizer.schedule(_optim(lr=1.0, total_steps=110, warmup_steps=10, decay='cosine'))
  np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)], [0, 0.5, 1, 0.5, 0], atol=1e-6)
  s = optimizer.schedule(
    _optim(lr=1.0, total_steps=110, warmup_steps=10, decay='linear', end_lr_ratio=0.1)
  )
  np.testing.assert_allclose([s(10), s(60), s(110)], [1, 0.55, 0.1], atol=1e-6)


def test_layer_depth_of_proteinbert_blocks():
  """ProteinBERT's blocks are encoder/blocks/i: each gets its own depth (they all fell to
  depth 0, the embeddings', before), heads the top."""
  assert optimizer._layer_of('encoder/blocks/2/wide_conv/kernel', 4) == 3
  assert optimizer._layer_of('encoder/layers/0/attention/query/kernel', 4) == 1
  assert optimizer._layer_of('encoder/embed/embedding', 4) == 0
  assert optimizer._layer_of('ptm_head/out/kernel', 4) == 5
