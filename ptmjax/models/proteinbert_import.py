"""ProteinBERT weights (the `protein-bert` package's pickle) into a ptmjax model folder.

    ptmjax convert-proteinbert --pickle epoch_92400_sample_23500000.pkl --out models/proteinbert

The published file is `(n_annotations, model.get_weights(), optimizer.get_weights())`:
Keras arrays in the order `create_model` builds its layers (`keras_weight_shapes`).
It is read with NumPy only, through an unpickler that admits nothing but NumPy
arrays and dtypes, so a foreign pickle cannot run code. Every size is inferred
from the array shapes except the wide convolution's dilation (5 in the
published model; `--dilation`). The PTM and count heads are new (seeded).
"""

from __future__ import annotations

import hashlib
import io
import pathlib
import pickle

import numpy as np

from ptmjax.data import tokenizer as tok
from ptmjax.errors import UserError
from ptmjax.models.config import ModelConfig

PUBLISHED_SHA256 = 'cffb53e237e49fa91f19a4c8bc0898dcfd75fd12eab7833d6e95b36c02ebacbf'
PUBLISHED_BYTES = 191_800_918
PUBLISHED_NAME = 'epoch_92400_sample_23500000.pkl'
BLOCK_WEIGHTS = (
  # Keras names within block i, in get_weights() order, and where each goes.
  ('global-to-seq-dense/kernel', 'global_to_local/kernel'),
  ('global-to-seq-dense/bias', 'global_to_local/bias'),
  ('narrow-conv/kernel', 'narrow_conv/kernel'),
  ('narrow-conv/bias', 'narrow_conv/bias'),
  ('wide-conv/kernel', 'wide_conv/kernel'),
  ('wide-conv/bias', 'wide_conv/bias'),
  ('seq-merge1-norm/gamma', 'local_norm1/scale'),
  ('seq-merge1-norm/beta', 'local_norm1/bias'),
  ('seq-dense/kernel', 'local_dense/kernel'),
  ('seq-dense/bias', 'local_dense/bias'),
  ('seq-merge2-norm/gamma', 'local_norm2/scale'),
  ('seq-merge2-norm/beta', 'local_norm2/bias'),
  ('global-dense1/kernel', 'global_dense1/kernel'),
  ('global-dense1/bias', 'global_dense1/bias'),
  ('global-attention/Wq', 'attention/Wq'),
  ('global-attention/Wk', 'attention/Wk'),
  ('global-attention/Wv', 'attention/Wv'),
  ('global-merge1-norm/gamma', 'global_norm1/scale'),
  ('global-merge1-norm/beta', 'global_norm1/bias'),
  ('global-dense2/kernel', 'global_dense2/kernel'),
  ('global-dense2/bias', 'global_dense2/bias'),
  ('global-merge2-norm/gamma', 'global_norm2/scale'),
  ('global-merge2-norm/beta', 'global_norm2/bias'),
)
_ALLOWED = {
  ('numpy', 'ndarray'),
  ('numpy', 'dtype'),
  ('numpy.core.multiarray', '_reconstruct'),
  ('numpy.core.multiarray', 'scalar'),
  ('numpy._core.multiarray', '_reconstruct'),
  ('numpy._core.multiarray', 'scalar'),
}


class ConversionError(UserError):
  """The file is not a ProteinBERT weights pickle (the message says why)."""


class _ArraysOnly(pickle.Unpickler):
  def find_class(self, module, name):
    if (module, name) not in _ALLOWED:
      raise ConversionError(f'the pickle asks for {module}.{name}: only NumPy arrays are read')
    # Pickles written by NumPy 1 name numpy.core, which NumPy 2 moved to numpy._core.
    if module.startswith('numpy.core'):
      module = 'numpy._core' + module.removeprefix('numpy.core')
    return super().find_class(module, name)


def keras_weight_shapes(
  *,
  vocab_size: int = 26,
  num_annotations: int,
  local_dim: int,
  global_dim: int,
  num_blocks: int,
  num_heads: int,
  key_dim: int,
  kernel: int,
) -> list[tuple[str, tuple[int, ...]]]:
  """(Keras name, shape) of `create_model(...).get_weights()`, in order."""
  a, d, g, h, k = num_annotations, local_dim, global_dim, num_heads, key_dim
  shapes = {
    'global-to-seq-dense/kernel': (g, d),
    'global-to-seq-dense/bias': (d,),
    'narrow-conv/kernel': (kernel, d, d),
    'narrow-conv/bias': (d,),
    'wide-conv/kernel': (kernel, d, d),
    'wide-conv/bias': (d,),
    'seq-merge1-norm/gamma': (d,),
    'seq-merge1-norm/beta': (d,),
    'seq-dense/kernel': (d, d),
    'seq-dense/bias': (d,),
    'seq-merge2-norm/gamma': (d,),
    'seq-merge2-norm/beta': (d,),
    'global-dense1/kernel': (g, g),
    'global-dense1/bias': (g,),
    'global-attention/Wq': (h, g, k),
    'global-attention/Wk': (h, d, k),
    'global-attention/Wv': (h, d, g // h),
    'global-merge1-norm/gamma': (g,),
    'global-merge1-norm/beta': (g,),
    'global-dense2/kernel': (g, g),
    'global-dense2/bias': (g,),
    'global-merge2-norm/gamma': (g,),
    'global-merge2-norm/beta': (g,),
  }
  out = [
    ('dense-global-input/kernel', (a, g)),
    ('dense-global-input/bias', (g,)),
    ('embedding-seq-input/embeddings', (vocab_size, d)),
  ]
  for i in range(1, num_blocks + 1):
    out += [(f'block{i}/{name}', shapes[name]) for name, _ in BLOCK_WEIGHTS]
  out += [
    ('output-seq/kernel', (d, vocab_size)),
    ('output-seq/bias', (vocab_size,)),
    ('output-annotations/kernel', (g, a)),
    ('output-annotations/bias', (a,)),
  ]
  return out


def read_pickle(path) -> tuple[int, list[np.ndarray]]:
  """(n_annotations, model weights) of a ProteinBERT pickle; the published file's sha256
  is checked when the file has its size."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such file')
  data = path.read_bytes()
  if len(data) == PUBLISHED_BYTES or path.name == PUBLISHED_NAME:
    digest = hashlib.sha256(data).hexdigest()
    if digest != PUBLISHED_SHA256:
      raise ConversionError(
        f'{path}: {len(data):,} bytes with sha256 {digest}, not the published '
        f'{PUBLISHED_NAME} ({PUBLISHED_BYTES:,} bytes, sha256 {PUBLISHED_SHA256}): '
        'a truncated or altered download'
      )
  try:
    obj = _ArraysOnly(io.BytesIO(data)).load()
  except ConversionError as e:
    raise ConversionError(f'{path}: {e}') from None
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
    raise ConversionError(f'{path}: not a readable pickle ({type(e).__name__}: {e})') from None
  if not (
    isinstance(obj, tuple)
    and len(obj) == 3
    and isinstance(obj[0], int)
    and isinstance(obj[1], list)
    and all(isinstance(w, np.ndarray) for w in obj[1])
  ):
    raise ConversionError(
      f'{path}: expected (n_annotations, model weights, optimizer weights) as the '
      'protein-bert package saves them'
    )
  return obj[0], obj[1]


def infer_sizes(n_annotations: int, weights: list[np.ndarray]) -> dict:
  """Every size of `create_model` from the weights' shapes (not the dilation)."""
  if (len(weights) - 7) % len(BLOCK_WEIGHTS) or len(weights) < 7 + len(BLOCK_WEIGHTS):
    raise ConversionError(
      f'{len(weights)} weight arrays: a ProteinBERT model has 7 + {len(BLOCK_WEIGHTS)} per block'
    )
  wq = weights[3 + BLOCK_WEIGHTS.index(('global-attention/Wq', 'attention/Wq'))]
  sizes = dict(
    vocab_size=weights[2].shape[0],
    num_annotations=n_annotations,
    local_dim=weights[2].shape[1],
    global_dim=weights[0].shape[1],
    num_blocks=(len(weights) - 7) // len(BLOCK_WEIGHTS),
    num_heads=wq.shape[0],
    key_dim=wq.shape[2],
    kernel=weights[5].shape[0],
  )
  expected = keras_weight_shapes(**sizes)
  for i, ((name, shape), w) in enumerate(zip(expected, weights, strict=True)):
    if tuple(w.shape) != shape:
      raise ConversionError(f'weight {i} ({name}) has shape {w.shape}, expected {shape}')
  return sizes


def model_config(sizes: dict, dilation: int = 5, **overrides) -> ModelConfig:
  """The ModelConfig of a converted model; `overrides` (padding, ptm_head, ...) win."""
  t = tok.proteinbert()
  fields = dict(
    family='proteinbert',
    vocab_size=sizes['vocab_size'],
    embed_dim=sizes['local_dim'],
    global_dim=sizes['global_dim'],
    num_layers=sizes['num_blocks'],
    num_heads=sizes['num_heads'],
    key_dim=sizes['key_dim'],
    conv_kernel=sizes['kernel'],
    wide_dilation=dilation,
    num_annotations=sizes['num_annotations'],
    layer_norm_eps=1e-3,  # Keras' LayerNormalization default
    activation='gelu',  # exact erf, as keras.activations.gelu
    pad_id=t.pad_id,
    cls_id=t.cls_id,
    eos_id=t.eos_id,
    mask_id=-1,
    token_dropout=False,
    max_len=1 << 20,  # no position table: any length runs whole
  )
  return ModelConfig(**{**fields, **overrides})


def keras_to_params(weights: list[np.ndarray], sizes: dict) -> dict:
  """{'encoder': ..., 'mlm_head': ..., 'annotation_head': ...} as PtmModel's parameter tree."""
  names = [name for name, _ in keras_weight_shapes(**sizes)]
  by_name = dict(zip(names, weights, strict=True))
  blocks = {}
  for i in range(sizes['num_blocks']):
    block = {}
    for keras, ours in BLOCK_WEIGHTS:
      module, leaf = ours.split('/')
      block.setdefault(module, {})[leaf] = by_name[f'block{i + 1}/{keras}']
    blocks[i] = block
  f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
  tree = {
    'encoder': {
      'global_input': {
        'kernel': by_name['dense-global-input/kernel'],
        'bias': by_name['dense-global-input/bias'],
      },
      'token_embed': {'embedding': by_name['embedding-seq-input/embeddings']},
      'blocks': blocks,
    },
    'mlm_head': {
      'out': {'kernel': by_name['output-seq/kernel'], 'bias': by_name['output-seq/bias']}
    },
    'annotation_head': {
      'out': {
        'kernel': by_name['output-annotations/kernel'],
        'bias': by_name['output-annotations/bias'],
      }
    },
  }
  import jax

  return jax.tree.map(f32, tree)


def convert(pickle_path, *, dilation: int = 5, seed: int = 0, **overrides):
  """A PtmModel holding the pickle's weights (PTM and count heads fresh from `seed`).

  Returns:
    (model, tokenizer, info) for `ptmjax.checkpoint.save_model`.
  """
  from flax import nnx

  from ptmjax.models.model import create_model

  n_annotations, weights = read_pickle(pickle_path)
  sizes = infer_sizes(n_annotations, weights)
  if not sizes['num_annotations']:
    raise ConversionError(f'{pickle_path}: n_annotations is 0')
  cfg = model_config(sizes, dilation, **overrides)
  model = create_model(cfg, seed)
  state = nnx.state(model, nnx.Param)
  pure = state.to_pure_dict()
  loaded = keras_to_params(weights, sizes)
  for part, tree in loaded.items():
    pure[part] = _merge(pure[part], tree, part)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  info = {
    'architecture': 'ProteinBERT',
    'source': str(pathlib.Path(pickle_path).resolve()),
    'sizes': {k: int(v) for k, v in sizes.items()},
    'wide_dilation': dilation,
    'new_heads_seed': seed,
  }
  return model, tok.proteinbert(), info


def _merge(current, loaded, where):
  if isinstance(current, dict):
    missing = set(current) ^ set(loaded)
    if missing:
      raise ConversionError(f'{where}: parameters {sorted(missing, key=str)} do not match')
    return {k: _merge(current[k], loaded[k], f'{where}/{k}') for k in current}
  if tuple(current.shape) != tuple(loaded.shape):
    raise ConversionError(f'{where}: shape {loaded.shape}, the model has {current.shape}')
  return loaded


# --- back to the protein-bert package's layout ----------------------------------------
def sizes_of(cfg: ModelConfig) -> dict:
  """`keras_weight_shapes` sizes of a ptmjax ProteinBERT (a model trained without
  annotations has a one-wide global input fed zeros: one annotation in Keras)."""
  return dict(
    vocab_size=cfg.vocab_size,
    num_annotations=max(cfg.num_annotations, 1),
    local_dim=cfg.embed_dim,
    global_dim=cfg.global_dim,
    num_blocks=cfg.num_layers,
    num_heads=cfg.num_heads,
    key_dim=cfg.key_dim,
    kernel=cfg.conv_kernel,
  )


def params_to_keras(params: dict, sizes: dict) -> list[np.ndarray]:
  """The inverse of `keras_to_params`: `model.get_weights()` order and shapes. A model
  without an annotation head (fine-tuned for PTMs only) exports a zero one."""
  enc = params['encoder']
  by_name = {
    'dense-global-input/kernel': enc['global_input']['kernel'],
    'dense-global-input/bias': enc['global_input']['bias'],
    'embedding-seq-input/embeddings': enc['token_embed']['embedding'],
    'output-seq/kernel': params['mlm_head']['out']['kernel'],
    'output-seq/bias': params['mlm_head']['out']['bias'],
  }
  blocks = enc['blocks']
  for i in sorted(blocks, key=int):
    for keras, ours in BLOCK_WEIGHTS:
      module, leaf = ours.split('/')
      by_name[f'block{int(i) + 1}/{keras}'] = blocks[i][module][leaf]
  head = params.get('annotation_head')
  a, g = sizes['num_annotations'], sizes['global_dim']
  by_name['output-annotations/kernel'] = head['out']['kernel'] if head else np.zeros((g, a))
  by_name['output-annotations/bias'] = head['out']['bias'] if head else np.zeros((a,))
  out = []
  for name, shape in keras_weight_shapes(**sizes):
    w = np.asarray(by_name[name], np.float32)
    if tuple(w.shape) != shape:
      raise ConversionError(f'{name}: shape {w.shape} here, {shape} in Keras')
    out.append(w)
  return out


def export_pickle(model, out, source='') -> pathlib.Path:
  """Writes a loaded ptmjax ProteinBERT (`checkpoint.load_model`) as the protein-bert
  package pickles its weights: `(n_annotations, model.get_weights(), [])` (no optimizer
  state). Load it in Keras with that package's `create_model(...,
  dilation_rate=cfg.wide_dilation)` and `set_weights`, or back here with
  `ptmjax convert-proteinbert`."""
  from flax import nnx

  cfg = model.cfg
  if cfg.family != 'proteinbert':
    raise ConversionError(
      f'{source}: a {cfg.family!r} model; export-keras writes ProteinBERT models '
      '(a transformer exports with `ptmjax export-hf`)'
    )
  sizes = sizes_of(cfg)
  weights = params_to_keras(nnx.state(model, nnx.Param).to_pure_dict(), sizes)
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  with open(out, 'wb') as f:
    pickle.dump((sizes['num_annotations'], weights, []), f)
  return out
