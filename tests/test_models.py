"""The encoder and heads: alignment, packing, bf16, logical axes, sharding, remat."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ptmjax import sharding as shd
from ptmjax.data import tokenizer as tok
from ptmjax.models import ModelConfig, PtmModel, attention, create_model, layers, num_params
from ptmjax.models.layers import segment_positions

ESM_TINY = ModelConfig(num_layers=2, embed_dim=32, num_heads=4, mlp_dim=48, head_dim=16, max_len=64)
BERT_TINY = ESM_TINY.replace(
  positions='learned',
  pre_layer_norm=False,
  embed_layer_norm=True,
  final_layer_norm=False,
  num_token_types=2,
  token_dropout=False,
  vocab_size=30,
  pad_id=0,
  cls_id=2,
  eos_id=3,
  mask_id=4,
)
TOKENIZERS = {33: tok.esm(), 30: tok.protbert()}  # by vocab size


def _eval_model(cfg, seed=0):
  model = create_model(cfg, seed)
  model.eval()
  return model


def test_residue_alignment_end_to_end():
  """A label on residue i meets the model output for residue i (the [CLS] shift).

  With no layers, token t's output depends on token t only; changing residue i
  of the input must change the per-residue PTM output at residue i and nowhere
  else, and a label placed on residue i sits at the same token as that output.
  """
  cfg = ESM_TINY.replace(num_layers=0)
  model, t = _eval_model(cfg), tok.esm()
  seq = 'MKTAYIAKQRQISFVKSHFSRQ'
  i = 7  # residue index (0-based): 'K'
  mutated = seq[:i] + 'W' + seq[i + 1 :]
  tokens, _ = t.batch([seq, mutated], 32)
  logits = np.asarray(model(tokens)['ptm'])
  per_res = [t.token_outputs_to_residues(logits[b], len(seq)) for b in range(2)]
  changed = np.flatnonzero(np.abs(per_res[0] - per_res[1]).max(-1) > 0)
  np.testing.assert_array_equal(changed, [i])

  labels = np.zeros((len(seq), cfg.num_ptm_types), np.int8)
  labels[i, 1] = 1
  token_labels = t.residue_labels_to_tokens(labels, 32)
  (token_pos,) = np.flatnonzero(token_labels[:, 1] == 1)
  assert token_pos == i + 1 and tokens[0, token_pos] == t.id('K')
  token_changed = np.flatnonzero(np.abs(logits[0] - logits[1]).max(-1) > 0)
  np.testing.assert_array_equal(token_changed, [token_pos])


@pytest.mark.parametrize('cfg', [ESM_TINY, BERT_TINY], ids=['esm', 'bert'])
@pytest.mark.parametrize('ptm_head', ['linear', 'conv'])
def test_packed_rows_equal_separate_proteins(cfg, ptm_head):
  cfg = cfg.replace(ptm_head=ptm_head, conv_width=5)
  model, t = _eval_model(cfg), TOKENIZERS[cfg.vocab_size]
  a, b = 'MKTAYIAKQRQ', 'MSTNPKPQRKTKRNT'
  ta, tb = t.encode(a), t.encode(b)
  ta[3] = t.mask_id  # per-protein token-dropout ratio
  packed = np.full((1, 40), t.pad_id, np.int32)
  packed[0, : len(ta)], packed[0, len(ta) : len(ta) + len(tb)] = ta, tb
  seg = np.zeros((1, 40), np.int32)
  seg[0, : len(ta)], seg[0, len(ta) : len(ta) + len(tb)] = 1, 2
  out = model(packed, seg, heads=('ptm', 'count'), num_segments=2)
  for k, (tk, off) in enumerate(((ta, 0), (tb, len(ta)))):
    alone = model(tk[None], heads=('ptm', 'count'))
    for name in ('hidden', 'ptm'):
      np.testing.assert_allclose(
        np.asarray(out[name][0, off : off + len(tk)]), np.asarray(alone[name][0]), atol=1e-5
      )
    np.testing.assert_allclose(
      np.asarray(out['count'][0, k]), np.asarray(alone['count'][0, 0]), atol=1e-5
    )


def test_segment_positions_restart():
  seg = np.array([[1, 1, 1, 2, 2, 3, 0, 0]])
  np.testing.assert_array_equal(segment_positions(seg), [[0, 1, 2, 0, 1, 0, 0, 1]])


def test_padding_does_not_change_outputs():
  model, t = _eval_model(ESM_TINY), tok.esm()
  short, _ = t.batch(['MKTAYIAK'])
  padded, _ = t.batch(['MKTAYIAK'], 40)
  a, b = model(short, heads=('ptm', 'mlm')), model(padded, heads=('ptm', 'mlm'))
  for name in ('hidden', 'ptm', 'mlm'):
    np.testing.assert_allclose(
      np.asarray(a[name][0]), np.asarray(b[name][0, : short.shape[1]]), atol=1e-5
    )
  assert np.isfinite(np.asarray(b['hidden'])).all()


def test_bfloat16_compute_with_float32_params():
  f32 = _eval_model(ESM_TINY)
  bf16 = _eval_model(ESM_TINY.replace(dtype='bfloat16'))
  tokens, mask = tok.esm().batch(['MKTAYIAKQRQISFVKSHFSRQ', 'MSSK'])
  for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)):
    assert p.dtype == jnp.float32
  a, b = f32(tokens, heads=('ptm', 'mlm')), bf16(tokens, heads=('ptm', 'mlm'))
  assert b['hidden'].dtype == jnp.bfloat16 and b['ptm'].dtype == jnp.float32
  for name in ('hidden', 'ptm', 'mlm'):
    x, y = np.asarray(a[name], np.float32)[mask], np.asarray(b[name], np.float32)[mask]
    assert np.isfinite(y).all()
    # bf16 keeps 8 bits of mantissa: relative error of a few 1e-3 per op.
    assert np.abs(x - y).max() < 0.05 * np.abs(x).max(), name


def test_every_parameter_has_logical_axes():
  for cfg in (
    ESM_TINY.replace(ptm_head='conv'),
    BERT_TINY.replace(ptm_head='mlp', tie_embeddings=False),
  ):
    state = nnx.state(nnx.eval_shape(lambda cfg=cfg: PtmModel(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    known = {shd.EMBED, shd.MLP, shd.HEADS, shd.KV, shd.VOCAB, None}
    for path, var in nnx.to_flat_state(state):
      names = var.get_metadata().get('out_sharding')
      assert names is not None, f'{path} has no logical axes'
      assert len(names) == var.value.ndim and set(names) <= known, (path, names)


def test_sharded_forward_equals_one_device():
  """A data x fsdp x tensor mesh of 8 fake CPU devices gives the one-device outputs."""
  assert jax.device_count() == 8
  cfg = ESM_TINY.replace(num_heads=4, mlp_dim=64)
  model = _eval_model(cfg)
  tokens, _ = tok.esm().batch(['MKTAYIAKQRQISFVKSHFSRQ', 'MSSK', 'MSTNPKPQRK', 'MAAAGGGKK'], 32)
  expected = model(tokens, heads=('ptm', 'mlm'))

  mesh = shd.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
  graphdef, state = nnx.split(model)
  state_sharding = shd.state_sharding(state, mesh, shd.DEFAULT_RULES)
  specs = {str(s.spec) for s in jax.tree.leaves(state_sharding)}
  assert any('tensor' in s for s in specs) and any('fsdp' in s for s in specs)
  batch_sharding = jax.sharding.NamedSharding(mesh, shd.P(('data', 'fsdp')))

  @jax.jit
  def forward(state, tokens):
    return nnx.merge(graphdef, state)(tokens, heads=('ptm', 'mlm'))

  with jax.set_mesh(mesh):
    sharded_state = jax.device_put(state, state_sharding)
    out = forward(sharded_state, jax.device_put(tokens, batch_sharding))
  for name in ('hidden', 'ptm', 'mlm'):
    np.testing.assert_allclose(np.asarray(out[name]), np.asarray(expected[name]), atol=1e-5)


def test_remat_gives_same_gradients():
  tokens, _ = tok.esm().batch(['MKTAYIAKQRQ', 'MSSK'])

  def grads(cfg):
    model = _eval_model(cfg)

    def loss_fn(m):
      return (m(tokens)['ptm'] ** 2).mean()

    return nnx.grad(loss_fn)(model)

  a, b = grads(ESM_TINY), grads(ESM_TINY.replace(remat=True))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


@pytest.mark.parametrize('heads', [1, 2, 4], ids=lambda g: f'{g}-heads-per-block')
@pytest.mark.parametrize('cfg', [ESM_TINY, BERT_TINY], ids=['esm', 'bert'])
def test_rows_attention_equals_batched(cfg, heads, monkeypatch):
  """The CPU attention path (blocks of heads, flash-style backward) gives the batched
  path's outputs and gradients, on packed rows with padding, whatever the block size."""
  monkeypatch.setattr(attention, 'BLOCK_BYTES', heads * 4 * 40 * 40)  # `heads` [40, 40] blocks
  assert attention._heads_per_block(cfg.num_heads, 40, attention.BLOCK_BYTES) == heads
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(5, 25, (3, 40)), jnp.int32)
  seg = np.ones((3, 40), np.int32)
  seg[0, 25:] = 2  # two proteins in row 0
  seg[1, 30:] = 0  # padding in row 1
  seg = jnp.asarray(seg)
  tokens = jnp.where(seg > 0, tokens, cfg.pad_id)
  target = jnp.asarray(rng.normal(size=(3, 40, cfg.num_ptm_types)), jnp.float32)

  def run(impl):
    model = _eval_model(cfg.replace(attention=impl))

    def loss_fn(m):
      out = m(tokens, seg)
      return (((out['ptm'] - target) * (seg > 0)[..., None]) ** 2).mean(), out['hidden']

    (loss, hidden), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    return loss, hidden, grads

  (la, ha, ga), (lb, hb, gb) = run('xla'), run('rows')
  np.testing.assert_allclose(lb, la, rtol=1e-6)
  np.testing.assert_allclose(
    np.asarray(hb)[np.asarray(seg) > 0], np.asarray(ha)[np.asarray(seg) > 0], atol=2e-5
  )
  for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=2e-6, rtol=1e-4)


def test_rotary_tables_equal_computing_them_in_float32():
  """The NumPy-built lookup table gives what computing cos/sin of positions x inverse
  frequencies in float32 gives (as ESM does), on packed rows whose positions restart."""
  seg = jnp.asarray([[1] * 30 + [2] * 20 + [0] * 14, [1] * 64])
  positions = segment_positions(seg)
  cos, sin = layers.rotary_tables(positions, 24, 10000.0)
  inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, 24, 2, dtype=jnp.float32) / 24))
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  assert cos.shape == sin.shape == (2, 64, 24)
  # NumPy's and XLA's float32 power and cos differ by an ulp or two at angles up to 63
  np.testing.assert_allclose(cos, jnp.cos(emb), atol=5e-6)
  np.testing.assert_allclose(sin, jnp.sin(emb), atol=5e-6)
  np.testing.assert_array_equal(cos[0, 30:50], cos[1, :20])  # the second protein restarts


def test_rows_attention_bfloat16_close_to_float32():
  tokens, _ = tok.esm().batch(['MKTAYIAKQRQLSTPEEK', 'MSSKR'])
  out32 = _eval_model(ESM_TINY.replace(attention='rows'))(tokens)['ptm']
  out16 = _eval_model(ESM_TINY.replace(attention='rows', dtype='bfloat16'))(tokens)['ptm']
  ref16 = _eval_model(ESM_TINY.replace(attention='xla', dtype='bfloat16'))(tokens)['ptm']
  np.testing.assert_allclose(np.asarray(out16, np.float32), np.asarray(out32), atol=0.05)
  np.testing.assert_allclose(
    np.asarray(out16, np.float32), np.asarray(ref16, np.float32), atol=0.02
  )


def test_dropout_only_in_training():
  model = create_model(ESM_TINY.replace(dropout_rate=0.3))
  tokens, _ = tok.esm().batch(['MKTAYIAKQRQ'])
  model.train()
  assert not np.allclose(model(tokens)['hidden'], model(tokens)['hidden'])
  model.eval()
  np.testing.assert_array_equal(model(tokens)['hidden'], model(tokens)['hidden'])


def test_num_params_matches_transformers_esm2_8m():
  """An ESM-2-8M-sized config has as many encoder + LM-head parameters as transformers'."""
  import transformers

  hf = transformers.EsmForMaskedLM(
    transformers.EsmConfig(
      vocab_size=33,
      hidden_size=320,
      num_hidden_layers=6,
      num_attention_heads=20,
      intermediate_size=1280,
      max_position_embeddings=1026,
      position_embedding_type='rotary',
      token_dropout=True,
      mask_token_id=32,
      pad_token_id=1,
    )
  )
  theirs = sum(p.numel() for n, p in hf.named_parameters() if 'contact_head' not in n)
  cfg = ModelConfig()
  heads = (cfg.embed_dim * 16 + 16) + (
    cfg.embed_dim * cfg.head_dim + cfg.head_dim + cfg.head_dim * 16 + 16
  )
  assert num_params(cfg) - heads == theirs


def test_config_validation():
  with pytest.raises(ValueError, match='multiple of num_heads'):
    ModelConfig(embed_dim=30, num_heads=4)
  with pytest.raises(ValueError, match='unknown model config keys'):
    ModelConfig.from_dict({'layers': 3})
  with pytest.raises(ValueError, match='unknown heads'):
    _eval_model(ESM_TINY)(np.zeros((1, 4), np.int32), heads=('contacts',))
