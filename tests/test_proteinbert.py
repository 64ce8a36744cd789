"""ProteinBERT: parity with the Keras reference (`protein-bert` package), the converter's
checks, padding that never changes outputs, packing, sharding, the published weights."""

import hashlib
import json
import os
import pathlib
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptmjax import checkpoint, cli
from ptmjax.data import tokenizer as tok
from ptmjax.models import ModelConfig, create_model, num_params
from ptmjax.models import proteinbert_import as pbi

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / 'tests' / 'fixtures' / 'proteinbert'
sys.path.insert(0, str(REPO / 'tests' / 'reference'))
from proteinbert_random import random_weights  # noqa: E402


def _fixture(name):
  f = dict(np.load(FIXTURES / f'{name}.npz'))
  seq_len, n_ann, d, g, blocks, heads, key, kernel, dilation, seed = map(int, f['sizes'])
  sizes = dict(
    num_annotations=n_ann, local_dim=d, global_dim=g, num_blocks=blocks, num_heads=heads,
    key_dim=key, kernel=kernel,
  )  # fmt: skip
  return f, sizes, dilation, seed, seq_len


def _pickle(name, path) -> tuple[dict, int]:
  """Writes the Keras model's weights as the package pickles them; returns the fixture."""
  f, sizes, dilation, seed, _ = _fixture(name)
  named = pbi.keras_weight_shapes(**sizes)
  with open(path, 'wb') as out:
    pickle.dump((sizes['num_annotations'], random_weights(named, seed), []), out)
  return f, dilation


# The published size is slow (issue 26: default suite time); 'small' has every layer kind.
@pytest.mark.parametrize('name', ['small', pytest.param('published', marks=pytest.mark.slow)])
def test_outputs_equal_the_keras_reference(name, tmp_path):
  """Token and annotation probabilities of `ptmjax convert-proteinbert`'s model equal the
  protein-bert package's Keras model with the same (random) weights, within 1e-5."""
  f, dilation = _pickle(name, tmp_path / 'w.pkl')
  assert [n.split('/')[-1] for n, _ in pbi.keras_weight_shapes(**_fixture(name)[1])] == [
    n.split('/')[-1].split(':')[0] for n in f['keras_names']
  ]  # the same weights in the same order
  assert cli.main(['convert-proteinbert', '--pickle', str(tmp_path / 'w.pkl'),
                   '--out', str(tmp_path / 'model'), '--dilation', str(dilation),
                   '--padding', 'reference']) == 0  # fmt: skip
  model, tokenizer, meta = checkpoint.load_model(tmp_path / 'model')
  seq_len = f['tokens'].shape[1]
  tokens, _ = tokenizer.batch([str(s) for s in f['sequences']], seq_len)
  np.testing.assert_array_equal(tokens, f['tokens'])  # the package's own tokenization
  out = jax.jit(lambda t, a: model(t, heads=('mlm', 'annotations'), annotations=a))(
    jnp.asarray(tokens), jnp.asarray(f['annotations'], jnp.float32)[:, None, :]
  )
  np.testing.assert_allclose(jax.nn.softmax(out['mlm']), f['token_probs'], atol=1e-5, rtol=0)
  np.testing.assert_allclose(
    jax.nn.sigmoid(out['annotations'][:, 0]), f['annotation_probs'], atol=1e-5, rtol=0
  )
  if name == 'published':
    assert meta['info']['sizes']['num_blocks'] == 6
    encoder_and_lm = num_params(model.cfg) - sum(
      x.size for x in jax.tree.leaves(checkpoint_params(model, ('ptm_head', 'count_head')))
    )
    assert encoder_and_lm == 15_981_321  # the published parameter count


def checkpoint_params(model, parts):
  from flax import nnx

  pure = nnx.state(model, nnx.Param).to_pure_dict()
  return {k: pure[k] for k in parts}


def test_converter_refuses_what_is_not_a_proteinbert_pickle(tmp_path):
  f, _ = _pickle('small', tmp_path / 'w.pkl')
  data = (tmp_path / 'w.pkl').read_bytes()
  (tmp_path / 'cut.pkl').write_bytes(data[: len(data) // 2])
  with pytest.raises(pbi.ConversionError, match='not a readable pickle'):
    pbi.read_pickle(tmp_path / 'cut.pkl')

  class Evil:
    def __reduce__(self):
      return (os.system, ('echo pwned',))

  (tmp_path / 'evil.pkl').write_bytes(pickle.dumps((3, [Evil()], [])))
  with pytest.raises(pbi.ConversionError, match='only NumPy arrays'):
    pbi.read_pickle(tmp_path / 'evil.pkl')
  (tmp_path / 'other.pkl').write_bytes(pickle.dumps({'weights': [np.zeros(3)]}))
  with pytest.raises(pbi.ConversionError, match='expected \\(n_annotations'):
    pbi.read_pickle(tmp_path / 'other.pkl')
  n, weights = pbi.read_pickle(tmp_path / 'w.pkl')
  weights[5] = weights[5][:, :-1]  # a narrow-conv kernel of the wrong shape
  with pytest.raises(pbi.ConversionError, match=r'weight 5 \(block1/narrow-conv/kernel\)'):
    pbi.infer_sizes(n, weights)
  # A file named like the published one is checked against its sha256.
  (tmp_path / pbi.PUBLISHED_NAME).write_bytes(data)
  with pytest.raises(pbi.ConversionError, match='truncated or altered'):
    pbi.read_pickle(tmp_path / pbi.PUBLISHED_NAME)
  # The CLI says it in one line, exit 2.
  assert cli.main(['convert-proteinbert', '--pickle', str(tmp_path / 'evil.pkl'),
                   '--out', str(tmp_path / 'm')]) == 2  # fmt: skip


def _small_model(padding='masked', seed=0):
  t = tok.proteinbert()
  cfg = ModelConfig(
    family='proteinbert', vocab_size=t.vocab_size, embed_dim=16, global_dim=24, num_layers=2,
    num_heads=3, key_dim=8, conv_kernel=5, wide_dilation=3, num_annotations=0,
    layer_norm_eps=1e-3, pad_id=t.pad_id, cls_id=t.cls_id, eos_id=t.eos_id, mask_id=-1,
    token_dropout=False, ptm_head='conv', head_dim=8, padding=padding,
  )  # fmt: skip
  return create_model(cfg, seed), t


SEQS = ['MKSPEELRRSSTKGKSPTYRRASLLK', 'MSTPSYKGRR', 'ACDEFGHIKLMNPQRSTVWYACDEFG']


def test_masked_padding_never_changes_a_proteins_outputs():
  model, t = _small_model('masked')
  heads = ('ptm', 'mlm', 'count')
  alone = [model(jnp.asarray(t.batch([s])[0]), heads=heads) for s in SEQS]
  for length in (32, 100):  # each new length compiles every op again (eager)
    batch = model(jnp.asarray(t.batch(SEQS, length)[0]), heads=heads)
    for i, (s, a) in enumerate(zip(SEQS, alone, strict=True)):
      n = len(s) + 2
      for k in ('hidden', 'ptm', 'mlm'):
        np.testing.assert_allclose(batch[k][i, :n], a[k][0, :n], atol=1e-5)
      np.testing.assert_allclose(batch['pooled'][i], a['pooled'][0], atol=1e-5)
      np.testing.assert_allclose(batch['count'][i], a['count'][0], atol=1e-5)
  # The reference mode does depend on the padded length, as the original does.
  ref, _ = _small_model('reference')
  a = ref(jnp.asarray(t.batch(SEQS[:1], 32)[0]), heads=('mlm',))['mlm'][0, :10]
  b = ref(jnp.asarray(t.batch(SEQS[:1], 64)[0]), heads=('mlm',))['mlm'][0, :10]
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_packed_rows_equal_proteins_alone():
  """Convolutions and global attention stay within each protein of a packed row."""
  model, t = _small_model('masked')
  ids = [t.encode(s) for s in SEQS]
  length = sum(map(len, ids)) + 5
  tokens = np.full((1, length), t.pad_id, np.int32)
  seg = np.zeros((1, length), np.int32)
  offset = 0
  for k, e in enumerate(ids):
    tokens[0, offset : offset + len(e)], seg[0, offset : offset + len(e)] = e, k + 1
    offset += len(e)
  packed = model(jnp.asarray(tokens), jnp.asarray(seg), heads=('ptm', 'count'), num_segments=3)
  offset = 0
  for k, e in enumerate(ids):
    alone = model(jnp.asarray(e[None]), heads=('ptm', 'count'))
    np.testing.assert_allclose(
      packed['ptm'][0, offset : offset + len(e)], alone['ptm'][0], atol=1e-5
    )
    np.testing.assert_allclose(packed['pooled'][0, k], alone['pooled'][0, 0], atol=1e-5)
    np.testing.assert_allclose(packed['count'][0, k], alone['count'][0, 0], atol=1e-5)
    offset += len(e)


def test_sharded_forward_and_gradients_equal_one_device():
  """Parameters sharded by their logical axes over a data x fsdp x tensor mesh of 8 fake
  devices give the one-device outputs and gradients."""
  from flax import nnx

  from ptmjax import sharding as shd

  model, t = _small_model('masked')
  tokens = jnp.asarray(t.batch(SEQS + SEQS[:1], 32)[0])

  def loss(m, x):
    out = m(x, heads=('ptm', 'mlm'))
    return (out['ptm'] ** 2).mean() + (out['mlm'] ** 2).mean()

  graphdef, state = nnx.split(model)
  grad_fn = jax.jit(lambda s, x: jax.value_and_grad(lambda s: loss(nnx.merge(graphdef, s), x))(s))
  want_loss, want_grads = grad_fn(state, tokens)
  mesh = shd.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
  sharding = shd.state_sharding(state, mesh, shd.DEFAULT_RULES)
  assert any(  # something is really split
    s.spec != jax.sharding.PartitionSpec() for s in jax.tree.leaves(sharding)
  )
  with jax.set_mesh(mesh):
    got_loss, got_grads = grad_fn(jax.device_put(state, sharding), tokens)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.skipif(
  not os.environ.get('PTMJAX_PROTEINBERT_PICKLE'),
  reason='set PTMJAX_PROTEINBERT_PICKLE to the published epoch_92400_sample_23500000.pkl',
)
def test_published_weights(tmp_path):
  """The real published weights: checksum, shapes, and a low denoising loss on yeast
  proteins (a swapped or transposed kernel makes it jump towards ln 26 = 3.3)."""
  path = pathlib.Path(os.environ['PTMJAX_PROTEINBERT_PICKLE'])
  assert hashlib.sha256(path.read_bytes()).hexdigest() == pbi.PUBLISHED_SHA256
  model, t, info = pbi.convert(path, padding='reference')
  assert info['sizes'] == dict(vocab_size=26, num_annotations=8943, local_dim=128,
                               global_dim=512, num_blocks=6, num_heads=4, key_dim=64, kernel=9)  # fmt: skip
  seqs = ['MSDNQKLRQHLLETSGLSEEQVNQSLVEALESAGINGS', 'MKAVVLAVALVFLTGCSAALPVQRRHEDSAPE' * 3]
  tokens = jnp.asarray(t.batch(seqs, 512)[0])
  logp = jax.nn.log_softmax(model(tokens, heads=('mlm',))['mlm'])
  real = np.asarray(tokens) != t.pad_id
  nll = -np.take_along_axis(np.asarray(logp), np.asarray(tokens)[..., None], -1)[..., 0]
  assert nll[real].mean() < 1.5, nll[real].mean()


def test_embed_pad_to_gives_the_keras_probabilities(tmp_path):
  """`ptmjax embed --pad-to 48 --lm` on the converted small model: the original's padding,
  so `lm/<id>` equals the Keras model's token probabilities (no annotations given)."""
  f, dilation = _pickle('small', tmp_path / 'w.pkl')
  assert cli.main(['convert-proteinbert', '--pickle', str(tmp_path / 'w.pkl'),
                   '--out', str(tmp_path / 'model'), '--dilation', str(dilation)]) == 0  # fmt: skip
  seq = str(f['sequences'][0])  # the fixture's protein given no annotations
  (tmp_path / 'p.fasta').write_text(f'>P1\n{seq}\n')
  out = tmp_path / 'e.npz'
  assert cli.main(['embed', '--checkpoint', str(tmp_path / 'model'), '--fasta',
                   str(tmp_path / 'p.fasta'), '--out', str(out), '--lm',
                   '--pad-to', str(f['tokens'].shape[1])]) == 0  # fmt: skip
  e = np.load(out)
  np.testing.assert_allclose(e['lm/P1'], f['token_probs'][0, 1 : 1 + len(seq)], atol=1e-5)
  assert e['residues/P1'].shape == (len(seq), 16) and e['pooled/P1'].shape == (24,)
  # Without --pad-to (masked padding) the protein runs alone and whole: other numbers.
  assert cli.main(['embed', '--checkpoint', str(tmp_path / 'model'), '--fasta',
                   str(tmp_path / 'p.fasta'), '--out', str(tmp_path / 'm.npz'), '--lm']) == 0  # fmt: skip
  assert np.abs(np.load(tmp_path / 'm.npz')['lm/P1'] - e['lm/P1']).max() > 1e-4


@pytest.mark.parametrize('objective', ['ptm', pytest.param('pretrain', marks=pytest.mark.slow)])
def test_trains_and_predicts_end_to_end(objective, tmp_path):
  """`ptmjax train` with a ProteinBERT encoder (packed rows), then `ptmjax predict` on a
  protein far longer than the training crops, whole."""
  from ptmjax.configs import common, synthetic
  from ptmjax.training import trainer

  c = synthetic.get_config('test')
  common.use_proteinbert(c, 'tiny')
  c.sharding.num_devices = 1
  c.sharding.mesh = {'data': 1}
  c.eval.update(every_steps=6, max_proteins=10)
  if objective == 'pretrain':
    c.loss.update(ptm_weight=0.0, mlm_weight=1.0)
    c.data.candidates = ''
    c.eval.every_steps = 0
    c.checkpoint.best_metric = ''
  trainer.train(c, tmp_path / 'run')
  rows = [json.loads(x) for x in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
  losses = [r['loss'] for r in rows if 'loss' in r]
  assert len(losses) == 6 and all(np.isfinite(losses))
  if objective == 'pretrain':
    assert 'mlm_loss' in rows[-1] and 2.0 < losses[0] < 6.0  # about ln 26 = 3.26 at the start
    return
  assert any('val/phosphorylation/auroc' in r for r in rows)
  long = 'MKSPEELRRSSTKGK' * 40  # 600 residues: the crops were 128 tokens
  (tmp_path / 'p.fasta').write_text(f'>LONG\n{long}\n>SHORT\nMKSPTS\n')
  assert cli.main(['predict', '--checkpoint', str(tmp_path / 'run' / 'final'), '--fasta',
                   str(tmp_path / 'p.fasta'), '--out', str(tmp_path / 'p.tsv')]) == 0  # fmt: skip
  lines = (tmp_path / 'p.tsv').read_text().splitlines()
  assert len(lines) == 1 + len(long) + 6


@pytest.mark.parametrize('name', ['small', pytest.param('published', marks=pytest.mark.slow)])
def test_keras_pickle_to_ptmjax_and_back_gives_every_weight(name, tmp_path):
  """`export-keras` writes the package's layout back: the same arrays in the same
  order, and the written pickle converts to a model with the Keras reference outputs."""
  f, dilation = _pickle(name, tmp_path / 'w.pkl')
  assert cli.main(['convert-proteinbert', '--pickle', str(tmp_path / 'w.pkl'),
                   '--out', str(tmp_path / 'model'), '--dilation', str(dilation),
                   '--padding', 'reference']) == 0  # fmt: skip
  assert cli.main(['export-keras', '--model', str(tmp_path / 'model'),
                   '--out', str(tmp_path / 'back.pkl')]) == 0  # fmt: skip
  n_a, original = pbi.read_pickle(tmp_path / 'w.pkl')
  n_b, exported = pbi.read_pickle(tmp_path / 'back.pkl')
  assert n_a == n_b and len(original) == len(exported)
  for i, (x, y) in enumerate(zip(original, exported, strict=True)):
    np.testing.assert_array_equal(y, np.asarray(x, np.float32), err_msg=f'weight {i}')
  assert cli.main(['convert-proteinbert', '--pickle', str(tmp_path / 'back.pkl'),
                   '--out', str(tmp_path / 'again'), '--dilation', str(dilation),
                   '--padding', 'reference']) == 0  # fmt: skip
  model, tokenizer, _ = checkpoint.load_model(tmp_path / 'again')
  tokens, _ = tokenizer.batch([str(s) for s in f['sequences']], f['tokens'].shape[1])
  out = model(jnp.asarray(tokens), heads=('mlm',),
              annotations=jnp.asarray(f['annotations'], jnp.float32)[:, None, :])  # fmt: skip
  np.testing.assert_allclose(jax.nn.softmax(out['mlm']), f['token_probs'], atol=1e-5, rtol=0)


def test_a_transformer_is_refused_by_export_keras(tmp_path, capsys):
  t = tok.esm()
  cfg = ModelConfig(vocab_size=t.vocab_size, num_layers=1, embed_dim=16, num_heads=2,
                    mlp_dim=32, pad_id=t.pad_id, cls_id=t.cls_id, eos_id=t.eos_id,
                    mask_id=t.mask_id)  # fmt: skip
  folder = checkpoint.save_model(tmp_path / 'tf', create_model(cfg, 0), t)
  assert cli.main(['export-keras', '--model', str(folder), '--out', str(tmp_path / 'x.pkl')]) == 2
  assert 'export-hf' in capsys.readouterr().err
