"""LoRA fine-tuning: only the adapters (and the head) change, the optimizer state is
adapter-sized, and the merged final model equals the adapted forward pass."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from ptmjax import checkpoint as ckpt
from ptmjax.configs import synthetic
from ptmjax.models import lora
from ptmjax.models.config import ModelConfig
from ptmjax.models.model import create_model, path_str
from ptmjax.training import trainer


def _flat(tree):
  return {path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _tokens(cfg, batch=2, length=24, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, cfg.vocab_size - 1, size=(batch, length)).astype(np.int32)
  return jnp.asarray(tokens)


def test_merged_adapters_equal_the_adapted_forward_pass():
  cfg = ModelConfig(num_layers=2, embed_dim=32, num_heads=4, head_dim=16, mlp_dim=64)
  model = create_model(cfg, 0)
  model.eval()
  tokens = _tokens(cfg)
  before = model(tokens, heads=('ptm',))['ptm']
  paths = lora.add_adapters(
    model, (r'encoder/layers/\d+/attention/(query|out)', r'encoder/layers/\d+/mlp/wi'), 4, 8.0,
    nnx.Rngs(params=1),
  )  # fmt: skip
  assert len(paths) == 6 and all('lora' not in p for p in paths)
  # B starts at zero: the adapted model is the imported one until it trains.
  np.testing.assert_array_equal(model(tokens, heads=('ptm',))['ptm'], before)
  for _, module in nnx.iter_graph(model):
    if isinstance(module, nnx.LoRA):  # a trained adapter: B no longer zero
      module.lora_b[...] = jax.random.normal(jax.random.key(2), module.lora_b.shape) * 0.1
  adapted = model(tokens, heads=('ptm',))['ptm']
  assert float(jnp.abs(adapted - before).max()) > 1e-3
  lora.merge_adapters(model)
  assert not any(isinstance(v, nnx.LoRAParam) for _, v in nnx.iter_graph(model))
  np.testing.assert_allclose(model(tokens, heads=('ptm',))['ptm'], adapted, atol=1e-5)


def test_targets_that_match_nothing_are_an_error():
  model = create_model(ModelConfig(num_layers=1, embed_dim=32, num_heads=4, head_dim=8), 0)
  with pytest.raises(ValueError, match='match no dense layer'):
    lora.add_adapters(model, ('encoder/nope',), 4, 8.0, nnx.Rngs(0))


@pytest.fixture(scope='module')
def lora_run(tmp_path_factory):
  """A model folder, then LoRA fine-tuning from it (rank 4 on q/k/v/out)."""
  root = tmp_path_factory.mktemp('lora')
  base = synthetic.get_config('test')
  base.sharding.num_devices = 1
  base.sharding.mesh.data = 1
  trainer.train(base, root / 'base')
  c = synthetic.get_config('test')
  c.sharding.num_devices = 1
  c.sharding.mesh.data = 1
  c.init_from.path = str(root / 'base' / 'final')
  c.init_from.skip = ()
  c.lora.rank = 4
  c.optim.lr = 1e-2
  trainer.train(c, root / 'lora')
  return root


def _params(folder):
  path = pathlib.Path(folder) / 'params'
  tree = ocp.PyTreeCheckpointer().metadata(path).item_metadata.tree
  args = ocp.args.PyTreeRestore(
    restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  )
  return _flat(ocp.PyTreeCheckpointer().restore(path, args=args))


def test_lora_training_changes_only_adapters_and_head(lora_run):
  base, tuned = _params(lora_run / 'base' / 'final'), _params(lora_run / 'lora' / 'final')
  assert set(base) == set(tuned)  # merged: the plain model's parameters, no adapters
  changed = sorted(p for p in base if not np.array_equal(base[p], tuned[p]))
  adapted = {f'encoder/layers/0/attention/{n}/kernel' for n in ('query', 'key', 'value', 'out')}
  assert adapted <= set(changed)
  # The heads `lora.train` names (the count head only by weight decay: no count loss).
  assert all(p in adapted or p.startswith(('ptm_head/', 'count_head/')) for p in changed), changed
  # Embeddings, norms, the MLP and every bias are the base model's, bit for bit.
  for p in ('encoder/token_embed/embedding', 'encoder/layers/0/mlp/wi/kernel'):
    np.testing.assert_array_equal(base[p], tuned[p])


def test_lora_optimizer_state_is_adapter_sized(lora_run):
  step = max(int(d.name) for d in (lora_run / 'lora' / 'checkpoints' / 'latest').iterdir())
  path = lora_run / 'lora' / 'checkpoints' / 'latest' / str(step) / 'state'
  tree = ocp.PyTreeCheckpointer().metadata(path).item_metadata.tree
  state = ocp.PyTreeCheckpointer().restore(
    path,
    args=ocp.args.PyTreeRestore(
      restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    ),
  )
  model, opt = _flat(state['model']), _flat(state['optimizer'])
  trained = {
    p: x for p, x in model.items() if '/lora/' in p or p.startswith(('ptm_head/', 'count_head/'))
  }
  adam_mu = {p: x for p, x in opt.items() if '/mu/' in p}
  assert adam_mu, sorted(opt)[:5]
  assert sum(x.size for x in adam_mu.values()) == sum(x.size for x in trained.values())
  assert sum(x.size for x in trained.values()) < 0.5 * sum(x.size for x in model.values())
  info = json.loads((lora_run / 'lora' / 'final' / ckpt.MODEL_FILE).read_text())
  assert info['info']['config']['lora']['rank'] == 4
  ckpt.load_model(lora_run / 'lora' / 'final')  # a plain model folder


def test_runs_from_before_the_lora_section_stay_finished(lora_run, tmp_path):
  """A finished run whose stored config has no `lora` section (older ptmjax) is still
  this config's finished run when LoRA is off: nothing is retrained."""
  import shutil

  shutil.copytree(lora_run / 'base' / 'final', tmp_path / 'final')
  meta_file = tmp_path / 'final' / ckpt.MODEL_FILE
  meta = json.loads(meta_file.read_text())
  del meta['info']['config']['lora']
  meta_file.write_text(json.dumps(meta))
  c = synthetic.get_config('test')
  c.sharding.num_devices = 1
  c.sharding.mesh.data = 1
  assert trainer.finished_result(c, tmp_path) is not None
  c.lora.rank = 4
  assert trainer.finished_result(c, tmp_path) is None
