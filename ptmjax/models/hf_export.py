"""Export of a ptmjax transformer back to a Hugging Face folder (the inverse of `hf_import`).

    ptmjax export-hf --model runs/esm_yeast/final --out hf_esm_yeast

writes what `transformers.AutoModelForMaskedLM.from_pretrained(out)` loads: an
`EsmForMaskedLM` (rotary positions, pre-LayerNorm: ESM-2 and ptmjax's own transformer)
or a `BertForMaskedLM` (learned positions, post-LayerNorm: ProtBert), as safetensors
with its config, the vocabulary and tokenizer files, and a README model card. The
per-residue PTM head (and a count head) have no `transformers` class: they are written
beside it as `ptmjax_heads.safetensors` (the same names as in ptmjax), so nothing
trained is lost. Parity of the exported PyTorch outputs with ptmjax's, and the
HF -> ptmjax -> HF round trip, are tested in tests/test_hf_export.py.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from flax import nnx

from ptmjax.errors import UsageError
from ptmjax.models import hf_import
from ptmjax.models.encoder import ModelConfig

HEADS_FILE = 'ptmjax_heads.safetensors'
# Keys transformers builds that ptmjax has no weights for: buffers it computes itself
# (rotary frequencies, position ids) and ESM's contact head (unused by ptmjax; kept at
# its initialisation, as in a MaskedLM checkpoint fine-tuned without contacts).
UNSET_OK = ('.inv_freq', 'position_ids', 'contact_head.')
ACTIVATIONS = {'gelu': 'gelu', 'gelu_tanh': 'gelu_new', 'relu': 'relu'}


def hf_family(cfg: ModelConfig) -> str:
  """'esm' or 'bert': the transformers architecture the config matches."""
  if cfg.family != 'transformer':
    raise UsageError(
      f'export-hf writes transformer-family models; this one is {cfg.family!r} '
      '(a ProteinBERT model exports with `ptmjax export-keras`)'
    )
  if cfg.positions == 'rotary' and cfg.pre_layer_norm and cfg.final_layer_norm:
    if cfg.embed_layer_norm:
      raise UsageError('ESM export: an embedding LayerNorm has no place in EsmModel')
    if cfg.activation != 'gelu':
      raise UsageError(f'ESM export: EsmModel uses exact gelu, not {cfg.activation!r}')
    if cfg.rope_theta != 10000.0:
      raise UsageError(f'ESM export: EsmModel fixes rotary theta at 10000, not {cfg.rope_theta}')
    return 'esm'
  if cfg.positions == 'learned' and not cfg.pre_layer_norm and cfg.embed_layer_norm:
    if cfg.activation not in ACTIVATIONS:
      raise UsageError(f'BERT export: activation {cfg.activation!r} has no BERT name')
    return 'bert'
  raise UsageError(
    f'export-hf: positions={cfg.positions!r}, pre_layer_norm={cfg.pre_layer_norm} matches '
    'neither ESM (rotary, pre-LN) nor BERT (learned, post-LN)'
  )


def hf_config(cfg: ModelConfig, family: str):
  """The EsmConfig / BertConfig `hf_import.config_from_hf` maps back onto `cfg`."""
  _, transformers = hf_import._torch()
  common = dict(
    vocab_size=cfg.vocab_size,
    hidden_size=cfg.embed_dim,
    num_hidden_layers=cfg.num_layers,
    num_attention_heads=cfg.num_heads,
    intermediate_size=cfg.mlp_dim,
    hidden_dropout_prob=cfg.dropout_rate,
    attention_probs_dropout_prob=cfg.attention_dropout_rate,
    max_position_embeddings=cfg.max_len,
    layer_norm_eps=cfg.layer_norm_eps,
    pad_token_id=cfg.pad_id,
    tie_word_embeddings=cfg.tie_embeddings,
  )
  if family == 'esm':
    return transformers.EsmConfig(
      **common,
      position_embedding_type='rotary',
      emb_layer_norm_before=False,
      token_dropout=cfg.token_dropout,
      mask_token_id=cfg.mask_id,
      architectures=['EsmForMaskedLM'],
    )
  return transformers.BertConfig(
    **common,
    type_vocab_size=max(cfg.num_token_types, 1),
    hidden_act=ACTIVATIONS[cfg.activation],
    architectures=['BertForMaskedLM'],
  )


def _put_linear(sd, prefix, p) -> None:
  w = np.asarray(p['kernel'], np.float32)
  out_dims = p['bias'].shape if 'bias' in p else None
  # ptmjax keeps heads split ([in, h, k] or [h, k, out]); torch wants [out, in].
  if out_dims is not None and len(out_dims) > 1:  # query/key/value: [in, h, k]
    w = w.reshape(w.shape[0], -1)
  elif w.ndim == 3:  # out: [h, k, out]
    w = w.reshape(-1, w.shape[-1])
  sd[f'{prefix}.weight'] = w.T
  if 'bias' in p:
    sd[f'{prefix}.bias'] = np.asarray(p['bias'], np.float32).reshape(-1)


def _put_norm(sd, prefix, p) -> None:
  sd[f'{prefix}.weight'] = np.asarray(p['scale'], np.float32)
  sd[f'{prefix}.bias'] = np.asarray(p['bias'], np.float32)


def state_dict_from_params(params: dict, cfg: ModelConfig, family: str) -> dict:
  """ptmjax's encoder and MLM head -> the `*ForMaskedLM` state dict (NumPy float32)."""
  enc, sd = params['encoder'], {}
  p = f'{family}.'
  sd[f'{p}embeddings.word_embeddings.weight'] = np.asarray(enc['token_embed']['embedding'])
  if family == 'bert':
    sd[f'{p}embeddings.position_embeddings.weight'] = np.asarray(enc['position_embed']['embedding'])
    if 'token_type_embed' in enc:
      types = np.asarray(enc['token_type_embed']['embedding'])
    else:  # a model without segments: BERT adds row 0 to every token, so zeros
      types = np.zeros((1, cfg.embed_dim), np.float32)
    sd[f'{p}embeddings.token_type_embeddings.weight'] = types
    _put_norm(sd, f'{p}embeddings.LayerNorm', enc['embed_norm'])
  else:
    _put_norm(sd, f'{p}encoder.emb_layer_norm_after', enc['final_norm'])
  for i in range(cfg.num_layers):
    layer, lp = enc['layers'][i], f'{p}encoder.layer.{i}'
    for name in ('query', 'key', 'value'):
      _put_linear(sd, f'{lp}.attention.self.{name}', layer['attention'][name])
    _put_linear(sd, f'{lp}.attention.output.dense', layer['attention']['out'])
    _put_linear(sd, f'{lp}.intermediate.dense', layer['mlp']['wi'])
    _put_linear(sd, f'{lp}.output.dense', layer['mlp']['wo'])
    if family == 'esm':
      _put_norm(sd, f'{lp}.attention.LayerNorm', layer['attention_norm'])
      _put_norm(sd, f'{lp}.LayerNorm', layer['mlp_norm'])
    else:
      _put_norm(sd, f'{lp}.attention.output.LayerNorm', layer['attention_norm'])
      _put_norm(sd, f'{lp}.output.LayerNorm', layer['mlp_norm'])
  mlm = params.get('mlm_head')
  if mlm is not None:
    head = 'lm_head' if family == 'esm' else 'cls.predictions'
    dense = f'{head}.dense' if family == 'esm' else f'{head}.transform.dense'
    norm = f'{head}.layer_norm' if family == 'esm' else f'{head}.transform.LayerNorm'
    _put_linear(sd, dense, mlm['dense'])
    _put_norm(sd, norm, mlm['norm'])
    sd[f'{head}.bias'] = np.asarray(mlm['bias'], np.float32)
    decoder = (
      enc['token_embed']['embedding']
      if cfg.tie_embeddings
      else np.asarray(mlm['decoder']['kernel']).T
    )
    sd[f'{head}.decoder.weight'] = np.asarray(decoder, np.float32)
    if family == 'bert':
      sd[f'{head}.decoder.bias'] = sd[f'{head}.bias']
  return sd


def _flat_params(tree, prefix='') -> dict:
  out = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(_flat_params(v, key + '.'))
    else:
      out[key] = np.asarray(v, np.float32)
  return out


def build(model, tokenizer):
  """(the PyTorch `*ForMaskedLM` holding ptmjax's weights, family, ptmjax's other heads)."""
  torch, transformers = hf_import._torch()
  cfg = model.cfg
  family = hf_family(cfg)
  params = nnx.state(model, nnx.Param).to_pure_dict()
  sd = state_dict_from_params(params, cfg, family)
  cls = transformers.EsmForMaskedLM if family == 'esm' else transformers.BertForMaskedLM
  hf_model = cls(hf_config(cfg, family)).eval()
  expected = hf_model.state_dict()
  unknown = sorted(set(sd) - set(expected))
  if unknown:
    raise ValueError(f'export-hf: keys transformers does not have: {unknown[:8]}')
  unset = [k for k in expected if k not in sd and not any(s in k for s in UNSET_OK)]
  if unset:
    raise ValueError(f'export-hf: no ptmjax weights for {unset[:8]}')
  for k, v in sd.items():
    if tuple(expected[k].shape) != v.shape:
      raise ValueError(f'export-hf: {k} is {v.shape} here, {tuple(expected[k].shape)} in torch')
  hf_model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()},
                           strict=False)  # fmt: skip
  heads = {
    k: v for k, v in _flat_params(params).items() if not k.startswith(('encoder.', 'mlm_head.'))
  }
  return hf_model, family, heads


def _tokenizer_files(tokenizer, family: str, out: pathlib.Path) -> None:
  _, transformers = hf_import._torch()
  vocab = out / 'vocab.txt'
  tokenizer.save_vocab(vocab)
  if family == 'esm':
    hf_tok = transformers.EsmTokenizer(str(vocab))
  else:
    hf_tok = transformers.BertTokenizer(str(vocab), do_lower_case=False)
  hf_tok.save_pretrained(str(out))
  tokenizer.save_vocab(vocab)  # the token order ptmjax reads back (hf_import.tokenizer_for)


def _readme(family: str, meta: dict, heads: dict, source) -> str:
  info = meta.get('info', {})
  channels = info.get('channels') or []
  return '\n'.join(
    [
      '---',
      'library_name: transformers',
      'tags: [protein, post-translational-modification, ptmjax]',
      '---',
      f'# {pathlib.Path(str(source)).name} (exported from ptmjax)',
      '',
      f'A `{"EsmForMaskedLM" if family == "esm" else "BertForMaskedLM"}` exported by '
      f'`ptmjax export-hf` from `{source}`. The encoder and masked-LM head load with '
      "`transformers`; their outputs equal ptmjax's (float32, to 1e-4).",
      '',
      'Per-residue PTM head (not a `transformers` class): `ptmjax_heads.safetensors`'
      + (f', channels {", ".join(channels)}' if channels else '')
      + '. Load the whole model back with `ptmjax convert-hf`, or use the encoder here.',
      '',
      f'Heads written beside it: {", ".join(sorted({k.split(".")[0] for k in heads})) or "none"}.',
      '',
    ]
  )


def export(model, tokenizer, meta: dict, out, source='') -> pathlib.Path:
  """Writes the Hugging Face folder of a loaded ptmjax transformer (`checkpoint.load_model`);
  `source` names the model folder in the README."""
  from safetensors.numpy import save_file

  hf_model, family, heads = build(model, tokenizer)
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  hf_model.save_pretrained(str(out), safe_serialization=True)
  _tokenizer_files(tokenizer, family, out)
  if heads:
    channels = json.dumps(meta.get('info', {}).get('channels') or [])
    save_file(heads, str(out / HEADS_FILE), metadata={'ptmjax_channels': channels})
  (out / 'README.md').write_text(_readme(family, meta, heads, source))
  return out
