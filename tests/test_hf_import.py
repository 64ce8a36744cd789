"""Parity of converted ESM-2 and BERT checkpoints with the PyTorch `transformers` models."""

import numpy as np
import pytest
import torch

from ptmjax.data import tokenizer as tok
from ptmjax.models import hf_import

TOL = 1e-4  # fp32 modules
SEQUENCES = ['MKTAYIAKQRQISFVKSHFSRQ', 'MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGGVYLLPRRGPRLGVRAT', 'MSSK']


def _reference(hf_model, tokens, mask):
  with torch.no_grad():
    t, m = torch.tensor(tokens, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    base = getattr(hf_model, 'esm', None) or getattr(hf_model, 'bert', None) or hf_model
    hidden = base(t, attention_mask=m).last_hidden_state.numpy()
    logits = (
      hf_model(t, attention_mask=m).logits.numpy()
      if hasattr(hf_model, 'lm_head') or hasattr(hf_model, 'cls')
      else None
    )
  return hidden, logits


@pytest.mark.parametrize('name', ['esm_mlm', 'esm_base', 'bert_mlm'])
def test_parity_with_transformers(hf_checkpoints, name):
  path, hf_model = hf_checkpoints[name]
  model, tokenizer, info = hf_import.convert(path)
  model.eval()
  assert info['mlm_head_imported'] == name.endswith('mlm')
  tokens, mask = tokenizer.batch(SEQUENCES)  # padded: proteins of different lengths
  assert (~mask).any()
  tokens[2, 3] = tokenizer.mask_id  # exercises ESM's token-dropout rescaling
  hidden_ref, logits_ref = _reference(hf_model, tokens, mask)
  out = model(tokens, heads=('mlm',))
  hidden = np.asarray(out['hidden'])
  err = np.abs(hidden - hidden_ref)[mask].max()
  assert err < TOL, f'{name}: hidden max abs error {err}'
  if logits_ref is not None:
    err = np.abs(np.asarray(out['mlm']) - logits_ref)[mask].max()
    assert err < TOL, f'{name}: MLM logits max abs error {err}'


def test_token_dropout_scaling_is_reproduced(hf_checkpoints):
  """Without <mask> tokens ESM still scales embeddings by 0.88; with them by 0.88/(1-ratio)."""
  path, hf_model = hf_checkpoints['esm_base']
  model, tokenizer, _ = hf_import.convert(path)
  model.eval()
  tokens, mask = tokenizer.batch(['MKTAYIAKQR'] * 2)
  tokens[1, 2:6] = tokenizer.mask_id
  ref = hf_model.embeddings(
    torch.tensor(tokens), attention_mask=torch.tensor(mask, dtype=torch.long)
  )
  seg = mask.astype(np.int32)
  pos = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  ours = np.asarray(model.encoder.embed(tokens, seg, pos))
  np.testing.assert_allclose(ours, ref.detach().numpy(), atol=1e-6)


def test_rotary_inv_freq_matches_checkpoint(hf_checkpoints):
  _, hf_model = hf_checkpoints['esm_base']
  k = hf_model.config.hidden_size // hf_model.config.num_attention_heads
  theirs = hf_model.rotary_embeddings.inv_freq.numpy()
  ours = 1.0 / (10000.0 ** (np.arange(0, k, 2, dtype=np.float32) / k))
  np.testing.assert_array_equal(ours, theirs)


def test_config_from_hf(hf_checkpoints):
  model, tokenizer, _ = hf_import.convert(hf_checkpoints['bert_mlm'][0])
  cfg = model.cfg
  assert (cfg.positions, cfg.pre_layer_norm, cfg.embed_layer_norm, cfg.num_token_types) == (
    'learned',
    False,
    True,
    2,
  )
  assert (cfg.cls_id, cfg.eos_id, cfg.pad_id, cfg.mask_id) == (2, 3, 0, 4)
  assert tokenizer.vocab == tok.PROTBERT_VOCAB
  model, tokenizer, _ = hf_import.convert(hf_checkpoints['esm_mlm'][0], ptm_head='mlp')
  assert (model.cfg.positions, model.cfg.token_dropout, model.cfg.ptm_head) == (
    'rotary',
    True,
    'mlp',
  )
  assert (model.cfg.cls_id, model.cfg.eos_id, model.cfg.pad_id, model.cfg.mask_id) == (0, 2, 1, 32)


def test_rejects_unsupported(tmp_path):
  import transformers

  cfg = transformers.EsmConfig(
    vocab_size=33,
    hidden_size=8,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=8,
    position_embedding_type='absolute',
    pad_token_id=1,
    mask_token_id=32,
  )
  with pytest.raises(ValueError, match='only rotary ESM'):
    hf_import.config_from_hf(cfg, tok.esm())
  cfg.position_embedding_type = 'rotary'
  cfg.mask_token_id = 5
  with pytest.raises(ValueError, match='mask token'):
    hf_import.config_from_hf(cfg, tok.esm())
  transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
  with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
    hf_import.load_hf_model(tmp_path)
