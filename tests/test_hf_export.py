"""`ptmjax export-hf`: a ptmjax transformer goes back to a `transformers` folder whose
PyTorch outputs equal ptmjax's; HF -> ptmjax -> HF gives back every weight."""

import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from test_hf_import import SEQUENCES, TOL, _reference  # noqa: E402

from ptmjax import checkpoint as ckpt  # noqa: E402
from ptmjax import cli  # noqa: E402
from ptmjax.models import hf_export, hf_import  # noqa: E402


@pytest.mark.parametrize('name', ['esm_mlm', 'bert_mlm'])
def test_hf_to_ptmjax_to_hf_gives_back_every_weight(hf_checkpoints, name):
  path, hf_model = hf_checkpoints[name]
  model, tokenizer, _ = hf_import.convert(path)
  back, _, _ = hf_export.build(model, tokenizer)
  original, exported = hf_model.state_dict(), back.state_dict()
  assert set(original) == set(exported)
  compared = 0
  for key, value in original.items():
    if any(s in key for s in hf_export.UNSET_OK):
      continue
    np.testing.assert_array_equal(exported[key].numpy(), value.numpy(), err_msg=key)
    compared += 1
  assert compared > 20


def _parity(model, tokenizer, out):
  hf_model = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
  tokens, mask = tokenizer.batch(SEQUENCES)
  hidden_ref, logits_ref = _reference(hf_model, tokens, mask)
  model.eval()
  got = model(tokens, heads=('mlm',))
  assert np.abs(np.asarray(got['hidden']) - hidden_ref)[mask].max() < TOL
  assert np.abs(np.asarray(got['mlm']) - logits_ref)[mask].max() < TOL
  # The tokenizer files encode as ptmjax does.
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  ids = hf_tok(' '.join(SEQUENCES[0]) if hf_tok.__class__.__name__.startswith('Bert')
               else SEQUENCES[0])['input_ids']  # fmt: skip
  assert ids == tokenizer.encode(SEQUENCES[0]).tolist()


@pytest.mark.parametrize('name', ['esm_mlm', 'bert_mlm'])
def test_exported_folder_loads_in_transformers_with_ptmjax_outputs(hf_checkpoints, name, tmp_path):
  path, _ = hf_checkpoints[name]
  model, tokenizer, info = hf_import.convert(path)
  folder = ckpt.save_model(tmp_path / 'ptmjax', model, tokenizer, info)
  out = tmp_path / 'hf'
  assert cli.main(['export-hf', '--model', str(folder), '--out', str(out)]) == 0
  assert (out / 'model.safetensors').is_file() and (out / 'README.md').is_file()
  _parity(model, tokenizer, out)


def test_ptmjax_trained_transformer_exports_with_its_ptm_head(quickstart_dir, tmp_path):
  from safetensors.numpy import load_file

  model, tokenizer, _ = ckpt.load_model(quickstart_dir / 'final')
  if model.cfg.family != 'transformer':
    pytest.skip('the quickstart model is not a transformer')
  out = tmp_path / 'hf'
  assert cli.main(['export-hf', '--model', str(quickstart_dir / 'final'), '--out', str(out)]) == 0
  _parity(model, tokenizer, out)
  heads = load_file(str(out / hf_export.HEADS_FILE))
  assert any(k.startswith('ptm_head.') for k in heads)


def test_proteinbert_model_is_refused_with_exit_2(tmp_path, capsys):
  from ptmjax.data import tokenizer as tok
  from ptmjax.models import create_model
  from ptmjax.models.encoder import ModelConfig

  t = tok.proteinbert()
  cfg = ModelConfig(vocab_size=t.vocab_size, num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32,
                    family='proteinbert', global_dim=32, key_dim=8, pad_id=t.pad_id,
                    cls_id=t.cls_id, eos_id=t.eos_id, mask_id=-1)  # fmt: skip
  folder = ckpt.save_model(tmp_path / 'pb', create_model(cfg, 0), t)
  assert cli.main(['export-hf', '--model', str(folder), '--out', str(tmp_path / 'hf')]) == 2
  assert 'transformer-family' in capsys.readouterr().err
