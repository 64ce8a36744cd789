"""Import of Hugging Face ESM-2 and BERT/ProtBert checkpoints into a ptmjax model.

Weights are read through the loaded PyTorch model's `state_dict()`, never from
the raw safetensors file: ESM files store LayerNorms as gamma/beta, hold a
wildcard rotary `inv_freq` key, and omit tied decoder weights; loading through
`transformers` resolves all three. Only the code that reads the checkpoint
needs torch; the converted model is plain JAX.
"""

from __future__ import annotations

import logging
import os
import pathlib

import numpy as np
from flax import nnx

from ptmjax.data import tokenizer as tok
from ptmjax.errors import UsageError
from ptmjax.models.encoder import ModelConfig
from ptmjax.models.model import PtmModel, create_model

log = logging.getLogger(__name__)

FAMILIES = {'esm': 'esm', 'bert': 'protbert'}
BERT_ACTIVATIONS = {
  'gelu': 'gelu',
  'gelu_new': 'gelu_tanh',
  'gelu_pytorch_tanh': 'gelu_tanh',
  'relu': 'relu',
}


def _torch():
  try:
    import torch
    import transformers
  except ImportError as e:  # depends on the install (tests/test_optional_deps.py)
    # A missing optional extra is the user's to install: one line, exit 2.
    raise UsageError(
      f'importing Hugging Face checkpoints needs PyTorch and transformers ({e}): '
      "pip install 'ptmjax[hf]'"
    ) from None
  return torch, transformers


def load_hf_model(name_or_path: str | os.PathLike):
  """Loads a checkpoint with `transformers` (PyTorch, CPU, float32, eval mode).

  `*ForMaskedLM` checkpoints keep their LM head; others load as the base model.
  """
  torch, transformers = _torch()
  hf_config = transformers.AutoConfig.from_pretrained(name_or_path)
  if hf_config.model_type not in FAMILIES:
    raise ValueError(
      f'{name_or_path}: model_type {hf_config.model_type!r} is not supported; '
      f'ptmjax imports {sorted(FAMILIES)}'
    )
  masked_lm = any('MaskedLM' in a for a in (hf_config.architectures or ()))
  cls = {
    ('esm', True): transformers.EsmForMaskedLM,
    ('esm', False): transformers.EsmModel,
    ('bert', True): transformers.BertForMaskedLM,
    ('bert', False): transformers.BertModel,
  }[hf_config.model_type, masked_lm]
  kwargs = {'add_pooling_layer': False} if not masked_lm else {}
  model = cls.from_pretrained(name_or_path, dtype=torch.float32, **kwargs)
  return model.eval()


def config_from_hf(hf_config, tokenizer: tok.Tokenizer, **overrides) -> ModelConfig:
  """The ModelConfig matching a transformers EsmConfig or BertConfig and its vocabulary."""
  c = hf_config
  for name, hf_id in (('pad', c.pad_token_id), ('mask', getattr(c, 'mask_token_id', None))):
    if hf_id is not None and hf_id != tokenizer.id(getattr(tokenizer, name)):
      raise ValueError(
        f'{name} token: model config says id {hf_id}, vocabulary says '
        f'{tokenizer.id(getattr(tokenizer, name))}'
      )
  common = dict(
    vocab_size=c.vocab_size,
    num_layers=c.num_hidden_layers,
    embed_dim=c.hidden_size,
    num_heads=c.num_attention_heads,
    mlp_dim=c.intermediate_size,
    layer_norm_eps=c.layer_norm_eps,
    tie_embeddings=bool(getattr(c, 'tie_word_embeddings', True)),
    dropout_rate=float(c.hidden_dropout_prob or 0.0),
    attention_dropout_rate=float(c.attention_probs_dropout_prob or 0.0),
    pad_id=tokenizer.pad_id,
    cls_id=tokenizer.cls_id,
    eos_id=-1 if tokenizer.eos_id is None else tokenizer.eos_id,
    mask_id=tokenizer.mask_id,
  )
  if c.model_type == 'esm':
    if c.position_embedding_type != 'rotary':
      raise ValueError(
        "only rotary ESM checkpoints (ESM-2) are supported; ESM-1b's absolute "
        'positions with a padding offset are not'
      )
    if c.emb_layer_norm_before:
      raise ValueError('ESM checkpoints with emb_layer_norm_before are not supported')
    if getattr(c, 'is_folding_model', False):
      raise ValueError('ESMFold checkpoints are not supported')
    cfg = ModelConfig(
      **common,
      max_len=c.max_position_embeddings,
      positions='rotary',
      pre_layer_norm=True,
      embed_layer_norm=False,
      final_layer_norm=True,
      num_token_types=0,
      token_dropout=bool(c.token_dropout),
      activation='gelu',
      rope_theta=float(getattr(c, 'rope_theta', 10000.0) or 10000.0),
    )
  else:
    if getattr(c, 'position_embedding_type', 'absolute') != 'absolute':
      raise ValueError('only absolute-position BERT checkpoints are supported')
    if c.hidden_act not in BERT_ACTIVATIONS:
      raise ValueError(f'hidden_act {c.hidden_act!r} not supported ({sorted(BERT_ACTIVATIONS)})')
    cfg = ModelConfig(
      **common,
      max_len=c.max_position_embeddings,
      positions='learned',
      pre_layer_norm=False,
      embed_layer_norm=True,
      final_layer_norm=False,
      num_token_types=c.type_vocab_size,
      token_dropout=False,
      activation=BERT_ACTIVATIONS[c.hidden_act],
    )
  return cfg.replace(**overrides)


def _linear(sd, prefix, in_shape=None, out_shape=None):
  """torch Linear [out, in] -> ptmjax Dense kernel in_shape + out_shape, bias out_shape."""
  w = sd[f'{prefix}.weight'].T
  if in_shape is not None or out_shape is not None:
    in_shape = in_shape or (w.shape[0],)
    out_shape = out_shape or (w.shape[1],)
    w = w.reshape(tuple(in_shape) + tuple(out_shape))
  out = {'kernel': w}
  if f'{prefix}.bias' in sd:
    b = sd[f'{prefix}.bias']
    out['bias'] = b.reshape(out_shape) if out_shape is not None else b
  return out


def _norm(sd, prefix):
  return {'scale': sd[f'{prefix}.weight'], 'bias': sd[f'{prefix}.bias']}


def params_from_hf(hf_model, cfg: ModelConfig) -> tuple[dict, bool]:
  """Converts the PyTorch weights to ptmjax's parameter tree.

  Returns:
    (pure dict of `encoder` and, when the checkpoint has one, `mlm_head`
    parameters as float32 NumPy arrays; whether the MLM head was imported).
  """
  sd = {k: v.detach().cpu().float().numpy() for k, v in hf_model.state_dict().items()}
  family = hf_model.config.model_type
  base = family if any(k.startswith(f'{family}.') for k in sd) else ''
  p = f'{base}.' if base else ''
  h, k = cfg.num_heads, cfg.head_size

  enc: dict = {'token_embed': {'embedding': sd[f'{p}embeddings.word_embeddings.weight']}}
  if family == 'bert':
    enc['position_embed'] = {'embedding': sd[f'{p}embeddings.position_embeddings.weight']}
    enc['token_type_embed'] = {'embedding': sd[f'{p}embeddings.token_type_embeddings.weight']}
    enc['embed_norm'] = _norm(sd, f'{p}embeddings.LayerNorm')
  else:
    inv_freq = sd.get(f'{p}rotary_embeddings.inv_freq')
    expected = 1.0 / (cfg.rope_theta ** (np.arange(0, k, 2, dtype=np.float32) / k))
    if inv_freq is not None and not np.allclose(inv_freq, expected, rtol=1e-6):
      raise ValueError('checkpoint rotary inv_freq differs from 1/theta^(2i/d)')
    enc['final_norm'] = _norm(sd, f'{p}encoder.emb_layer_norm_after')

  layers = {}
  for i in range(cfg.num_layers):
    lp = f'{p}encoder.layer.{i}'
    attn = {
      'query': _linear(sd, f'{lp}.attention.self.query', out_shape=(h, k)),
      'key': _linear(sd, f'{lp}.attention.self.key', out_shape=(h, k)),
      'value': _linear(sd, f'{lp}.attention.self.value', out_shape=(h, k)),
      'out': _linear(sd, f'{lp}.attention.output.dense', in_shape=(h, k)),
    }
    layer = {
      'attention': attn,
      'mlp': {
        'wi': _linear(sd, f'{lp}.intermediate.dense'),
        'wo': _linear(sd, f'{lp}.output.dense'),
      },
    }
    if family == 'esm':
      layer['attention_norm'] = _norm(sd, f'{lp}.attention.LayerNorm')
      layer['mlp_norm'] = _norm(sd, f'{lp}.LayerNorm')
    else:
      layer['attention_norm'] = _norm(sd, f'{lp}.attention.output.LayerNorm')
      layer['mlp_norm'] = _norm(sd, f'{lp}.output.LayerNorm')
    layers[i] = layer
  enc['layers'] = layers
  out = {'encoder': enc}

  head = 'lm_head' if family == 'esm' else 'cls.predictions'
  has_mlm = f'{head}.bias' in sd
  if has_mlm:
    dense = f'{head}.dense' if family == 'esm' else f'{head}.transform.dense'
    norm = f'{head}.layer_norm' if family == 'esm' else f'{head}.transform.LayerNorm'
    mlm = {'dense': _linear(sd, dense), 'norm': _norm(sd, norm), 'bias': sd[f'{head}.bias']}
    if not cfg.tie_embeddings:
      mlm['decoder'] = {'kernel': sd[f'{head}.decoder.weight'].T}
    out['mlm_head'] = mlm
  return out, has_mlm


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def load_params(model: PtmModel, params: dict) -> None:
  """Writes a (partial) pure-dict parameter tree into `model`, checking every key and shape."""
  state = nnx.state(model, nnx.Param)
  current = dict(_flatten(state.to_pure_dict()))
  new = dict(_flatten(params))
  missing = sorted('/'.join(map(str, k)) for k in new if k not in current)
  if missing:
    raise ValueError(f'parameters not in the model: {missing[:10]}')
  for key, value in new.items():
    if tuple(value.shape) != tuple(current[key].shape):
      raise ValueError(
        f'{"/".join(map(str, key))}: checkpoint shape {value.shape} != model {current[key].shape}'
      )
  for prefix in {k[0] for k in new}:
    expected = {k for k in current if k[0] == prefix}
    if expected - set(new):
      absent = sorted('/'.join(map(str, k)) for k in expected - set(new))
      raise ValueError(f'{prefix}: parameters missing from the checkpoint: {absent[:10]}')
  merged = state.to_pure_dict()

  def put(tree, key, value):
    for part in key[:-1]:
      tree = tree[part]
    tree[key[-1]] = np.asarray(value, np.float32)

  for key, value in new.items():
    put(merged, key, value)
  nnx.replace_by_pure_dict(state, merged)
  nnx.update(model, state)


def tokenizer_for(hf_model, name_or_path) -> tok.Tokenizer:
  """The checkpoint's tokenizer: its vocab.txt when there is one, else the family default."""
  family = FAMILIES[hf_model.config.model_type]
  vocab_file = None
  if pathlib.Path(name_or_path, 'vocab.txt').is_file():
    vocab_file = pathlib.Path(name_or_path, 'vocab.txt')
  else:
    try:
      from transformers.utils import cached_file

      found = cached_file(
        str(name_or_path), 'vocab.txt', _raise_exceptions_for_missing_entries=False
      )
      vocab_file = pathlib.Path(found) if found else None
    except Exception:  # offline with no cached vocab: fall back to the family default
      vocab_file = None
  tokenizer = tok.from_vocab_file(vocab_file, family) if vocab_file else tok.TOKENIZERS[family]()
  if vocab_file is None:
    log.warning('%s: no vocab.txt; using the built-in %s vocabulary', name_or_path, family)
  if tokenizer.vocab_size != hf_model.config.vocab_size:
    raise ValueError(
      f'{name_or_path}: vocabulary has {tokenizer.vocab_size} tokens, model {hf_model.config.vocab_size}'
    )
  return tokenizer


def convert(name_or_path, *, seed: int = 0, **overrides):
  """Loads a Hugging Face checkpoint into a new PtmModel.

  Args:
    name_or_path: a local folder or a hub name (the same `from_pretrained` call).
    seed: initialises the heads the checkpoint does not have.
    **overrides: ModelConfig fields to change (e.g. ptm_head='mlp', dtype='bfloat16').

  Returns:
    (model, tokenizer, info dict describing the source).
  """
  hf_model = load_hf_model(name_or_path)
  tokenizer = tokenizer_for(hf_model, name_or_path)
  cfg = config_from_hf(hf_model.config, tokenizer, **overrides)
  model = create_model(cfg, seed)
  params, has_mlm = params_from_hf(hf_model, cfg)
  load_params(model, params)
  info = {
    'source': str(name_or_path),
    'family': hf_model.config.model_type,
    'architecture': type(hf_model).__name__,
    'mlm_head_imported': has_mlm,
  }
  return model, tokenizer, info
