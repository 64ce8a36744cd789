"""Thin Orbax layer: self-describing model folders, `init_from` merging, the train-state tree.

A *model folder* is what `ptmjax convert-hf` writes, what training leaves at
`WORKDIR/final`, and what `ptmjax embed` / `ptmjax predict` read:

    MODEL_DIR/ptmjax_model.json   model config, tokenizer, provenance
    MODEL_DIR/params/             Orbax checkpoint of the parameters, a plain
                                  nested dict (encoder/..., ptm_head/..., ...)

The parameters are a plain dict of arrays, so a user can read them with Orbax
alone (see README, "Loading a checkpoint without ptmjax"). A training work dir's
`checkpoints/{latest,best}/<step>/state` holds `{'model': ..., 'optimizer': ...}`
(`state_to_tree`), also plain nested dicts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from ptmjax import paths
from ptmjax.data import tokenizer as tok
from ptmjax.errors import ModelFolderError
from ptmjax.models.config import ModelConfig
from ptmjax.models.model import PtmModel, abstract_model, create_model, path_str
from ptmjax.run_dir import COMPACT_PARAMS, MODEL_FILE, PARAMS, RunDir

FORMAT = 'ptmjax-model/1'


def params_digest(params) -> str:
  """sha256 over every parameter's path, dtype, shape and bytes (in path order): written
  at save, checked at load, so flipped bytes in a file cannot pass as weights."""
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  for p, x in sorted(((path_str(p), x) for p, x in leaves), key=lambda t: t[0]):
    a = np.ascontiguousarray(jax.device_get(x))
    h.update(f'{p}|{a.dtype}|{a.shape}|'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


def tokenizer_to_dict(tokenizer: tok.Tokenizer) -> dict:
  return {f.name: getattr(tokenizer, f.name) for f in dataclasses.fields(tokenizer)}


def tokenizer_from_dict(d: dict) -> tok.Tokenizer:
  return tok.Tokenizer(**{**d, 'vocab': tuple(d['vocab'])})


def save_model(path, model: PtmModel, tokenizer: tok.Tokenizer, info: dict | None = None):
  """Writes a model folder, replacing one that is there.

  On one process the folder is written beside the target (`NAME.tmp`) and swapped in
  by renames, so an interrupted save leaves the previous folder whole. With several
  processes (one shared file system, Orbax writing collectively) it is written in
  place, the JSON last: a folder without it is not a model folder.
  """
  path = paths.absolute(paths.as_path(path, 'model folder'))
  # Swapped in by renames only on a local disk: on an object store a "rename" copies
  # every object, so the folder is written in place there, the JSON last.
  single = jax.process_count() == 1 and not paths.is_remote(path)
  target = path.with_name(path.name + '.tmp') if single else path
  if single and target.exists():
    shutil.rmtree(target)  # what an earlier interrupted save left
  target.mkdir(parents=True, exist_ok=True)
  if not single and jax.process_index() == 0 and (target / MODEL_FILE).exists():
    (target / MODEL_FILE).unlink()  # written in place: no stale JSON over new parameters
  params = nnx.state(model, nnx.Param).to_pure_dict()
  if jax.process_count() > 1:
    params = jax.tree.map(_global_array, params)
  checkpointer = ocp.Checkpointer(_state_handler(target))
  checkpointer.save(target / PARAMS, args=ocp.args.StandardSave(params), force=True)
  meta = {
    'format': FORMAT,
    'model': model.cfg.to_dict(),
    'tokenizer': tokenizer_to_dict(tokenizer),
    'info': info or {},
  }
  if jax.process_count() == 1:  # a digest needs every shard on one host
    meta['params_sha256'] = params_digest(params)
  if jax.process_index() == 0:
    text = json.dumps(meta, indent=2) + '\n'
    if paths.is_remote(target):  # one object, written whole
      (target / MODEL_FILE).write_text(text)
    else:
      tmp = target / (MODEL_FILE + '.tmp')
      tmp.write_text(text)
      tmp.replace(target / MODEL_FILE)
  if single:
    old = path.with_name(path.name + '.old')
    if old.exists():
      shutil.rmtree(old)
    if path.exists():
      path.rename(old)
    target.rename(path)
    if old.exists():
      shutil.rmtree(old)
  return path


def _global_array(x):
  """A process-local array (a model built on every process, e.g. a study's random
  initialisation) as one replicated global array: Orbax saves only global arrays when
  there are several processes. Every process holds the same values."""
  if not isinstance(x, jax.Array) or not x.is_fully_addressable:
    return x
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('all',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  local = np.asarray(x)
  return jax.make_array_from_callback(local.shape, sharding, lambda index: local[index])


def _state_handler(directory) -> ocp.StandardCheckpointHandler:
  """Orbax's handler for parameter trees. On object stores without OCDBT (one TensorStore
  array per parameter, no shared manifest): against the Cloud Storage emulator, OCDBT's
  conditional manifest writes failed now and then ("Malformed StorageGeneration");
  plain arrays saved and restored every time. Either format restores with Orbax alone."""
  return ocp.StandardCheckpointHandler(use_ocdbt=not paths.is_remote(directory))


def train_state_handlers(directory) -> dict:
  """Item handlers of a training work dir's checkpoint managers: state and data."""
  return {'state': _state_handler(directory), 'data': ocp.JsonCheckpointHandler()}


def read_meta(path) -> dict:
  """The JSON of a model folder, with a clear error when `path` is not one."""
  path = paths.as_path(path, 'model folder')
  file = path / MODEL_FILE
  if not file.is_file():
    hint = ''
    if RunDir(path).is_finished():
      hint = f'; a training work dir holds its final model at {RunDir(path).final}'
    raise FileNotFoundError(f'{path}: not a ptmjax model folder (no {MODEL_FILE}){hint}')
  try:
    meta = json.loads(file.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ModelFolderError(f'{file}: not readable JSON ({e})') from None
  if meta.get('format') != FORMAT:
    raise ModelFolderError(f'{file}: format {meta.get("format")!r}, expected {FORMAT!r}')
  return meta


def model_config(path, meta: dict) -> ModelConfig:
  """The folder's model config; an edited or damaged one is a ModelFolderError naming
  the file, not a KeyError deep in the model code."""
  try:
    cfg = ModelConfig.from_dict(meta['model'])
    tokenizer_from_dict(meta['tokenizer'])
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise ModelFolderError(
      f'{paths.as_path(path) / MODEL_FILE}: not a valid model description '
      f'({type(e).__name__}: {e}); restore the folder from its source'
    ) from None
  return cfg


def resolve_model_dir(path) -> pathlib.Path:
  """Accepts a model folder or a training work dir (whose `final/` is one)."""
  path = paths.as_path(path, 'model folder')
  if not (path / MODEL_FILE).is_file() and RunDir(path).is_finished():
    return RunDir(path).final
  return path


def load_model(path, *, sharding=None, **overrides):
  """Restores a model folder.

  Args:
    path: model folder (or a training work dir with `final/`).
    sharding: optional pytree of shardings for the parameters, or one
      sharding for all of them (default: the default device).
    **overrides: ModelConfig fields to change at load time that do not alter
      parameter shapes (e.g. dtype='bfloat16', dropout_rate=0.0).

  Returns:
    (model, tokenizer, meta dict).
  """
  path = paths.absolute(resolve_model_dir(path))
  meta = read_meta(path)
  compact = not (path / PARAMS).exists() and (path / COMPACT_PARAMS).is_file()
  if not (path / PARAMS).exists() and not compact:
    # A study archive keeps a model's description and digest, not its weights.
    raise ModelFolderError(
      f'{path}: a model description without its weights (params/ is absent; restored from '
      'a study archive?); train it again or name a folder with weights'
    )
  cfg = model_config(path, meta).replace(**overrides)
  abstract = abstract_model(cfg)
  graphdef, abstract_params, _ = nnx.split(abstract, nnx.Param, ...)
  target = abstract_params.to_pure_dict()
  if sharding is not None:
    shardings = (
      sharding
      if not isinstance(sharding, jax.sharding.Sharding)
      else jax.tree.map(lambda _: sharding, target)
    )
    target = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), target, shardings
    )
  try:
    if compact:
      params = _restore_compact(path / COMPACT_PARAMS, target)
    else:
      params = ocp.StandardCheckpointer().restore(path / PARAMS, target)
  except Exception as e:  # noqa: BLE001 - Orbax wraps TensorStore's errors in a bare Exception
    first = str(e).splitlines()[0][:300] if str(e) else ''
    raise ModelFolderError(
      f'{path}: the parameters cannot be read ({type(e).__name__}: {first})'
    ) from e
  verify_params(path, meta, _as_stored(params) if compact else params)
  # Non-parameter state (dropout RNG counters) is created fresh.
  model = nnx.merge(graphdef, abstract_params, _fresh_rest(cfg))
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  return model, tokenizer_from_dict(meta['tokenizer']), meta


def _restore_compact(file, target) -> dict:
  """The parameters of a `COMPACT_PARAMS` file onto `target` (shapes, dtypes, shardings)."""
  with np.load(file) as npz:

    def leaf(p, x):
      a = npz[path_str(p)]
      if a.shape != x.shape:
        raise ValueError(f'{path_str(p)}: shape {a.shape} in the file, {x.shape} in the model')
      a = a.astype(x.dtype)
      sharding = getattr(x, 'sharding', None)
      return jax.device_put(a, sharding) if sharding is not None else jnp.asarray(a)

    return jax.tree_util.tree_map_with_path(leaf, target)


def _as_stored(params) -> dict:
  """Parameters as a compact file stores them (float16), for its digest."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)).astype(np.float16), params)


def save_compact(model_dir, out, info: dict | None = None) -> pathlib.Path:
  """A model folder with float16 weights in one `.npz` (a shipped model): the same
  description, `info` merged in, and the digest of the stored float16 values."""
  model, tokenizer, meta = load_model(model_dir)
  params = nnx.state(model, nnx.Param).to_pure_dict()
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  arrays = {path_str(p): np.asarray(x).astype(np.float16) for p, x in leaves}
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(out / COMPACT_PARAMS, **arrays)
  meta = {**meta, 'info': {**meta.get('info', {}), **(info or {})}}
  meta['params_sha256'] = params_digest(_as_stored(params))
  meta['params_dtype'] = 'float16'
  (out / MODEL_FILE).write_text(json.dumps(meta, indent=2) + '\n')
  del tokenizer
  return out


def verify_params(path, meta: dict, params) -> None:
  """Checks restored parameters against the folder's digest (folders from before digests:
  that every value is finite). On several processes only the finite check runs."""
  expected = meta.get('params_sha256')
  if expected and jax.process_count() == 1:
    if params_digest(params) != expected:
      raise ModelFolderError(
        f'{path}: the parameters do not match the checksum written when the folder was saved '
        '(a corrupted or partly copied file); restore the folder from its source'
      )
    return
  for p, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    if not bool(jnp.isfinite(x).all()):
      raise ModelFolderError(f'{path}: parameter {path_str(p)} holds NaN or infinity (corrupted?)')


def _fresh_rest(cfg: ModelConfig):
  """The model's non-parameter state (RNG keys and counts), without materialising params."""
  # Under jit, the unused parameter initialisers are dead code and never run.
  return jax.jit(lambda: nnx.state(create_model(cfg), nnx.Not(nnx.Param)))()


# --- init_from and the train state ----------------------------------------------------
def init_params_from(state_params: dict, path, skip) -> tuple[dict, list[str], list[str]]:
  """Parameters of a model folder merged into `state_params`, except paths matching `skip`.

  Returns:
    (merged parameters, paths taken from the folder, paths skipped).
  """
  # Absolute: Orbax reads no metadata from a relative path (`.tree` of None).
  path = paths.absolute(resolve_model_dir(path))
  meta = read_meta(path)
  model_config(path, meta)
  try:
    tree = ocp.PyTreeCheckpointer().metadata(path / PARAMS).item_metadata.tree
    loaded = ocp.PyTreeCheckpointer().restore(
      path / PARAMS,
      args=ocp.args.PyTreeRestore(
        restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
      ),
    )
  except Exception as e:  # noqa: BLE001 - Orbax wraps TensorStore's errors in a bare Exception
    first = str(e).splitlines()[0][:300] if str(e) else ''
    raise ModelFolderError(
      f'init_from {path}: the parameters cannot be read ({type(e).__name__}: {first})'
    ) from None
  # The checksum `predict` verifies: a damaged folder never starts a run.
  verify_params(path, meta, loaded)
  flat_loaded = {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
  skip_re = [re.compile(s) for s in skip]
  taken, skipped = [], []

  def pick(p, current):
    name = path_str(p)
    if any(r.fullmatch(name) for r in skip_re):
      skipped.append(name)
      return current
    if name not in flat_loaded:
      raise ModelFolderError(
        f'init_from {path}: no parameter {name} (add it to init_from.skip to keep it fresh)'
      )
    value = flat_loaded[name]
    if value.shape != current.shape:
      raise ModelFolderError(
        f'init_from {path}: {name} has shape {value.shape}, model {current.shape}'
      )
    taken.append(name)
    return jnp.asarray(value, current.dtype)

  return jax.tree_util.tree_map_with_path(pick, state_params), taken, skipped


def state_to_tree(state) -> dict:
  """The (model, optimizer) state as the plain dict a checkpoint holds: {'model', 'optimizer'}."""
  pure = state.to_pure_dict()
  return {'model': pure[0], 'optimizer': pure[1]}


def state_from_tree(tree: dict) -> dict:
  """The inverse of `state_to_tree`, for `nnx.replace_by_pure_dict`."""
  return {0: tree['model'], 1: tree['optimizer']}


# --- a run's model ---------------------------------------------------------------------
INIT_FROM_KEEPS = (
  # Model settings a run may change on top of an init_from folder's config: none
  # of them changes a parameter shape the folder has (heads are re-created).
  'dtype', 'remat', 'dropout_rate', 'ptm_head', 'head_dim', 'conv_width', 'attention_dropout_rate',
)  # fmt: skip


def model_and_tokenizer(config) -> tuple[ModelConfig, tok.Tokenizer]:
  """The model config and tokenizer: the config's own, or those of `init_from.path`."""
  if config.init_from.get('path'):
    meta = read_meta(resolve_model_dir(config.init_from.path))
    keep = {k: v for k, v in config.model.items() if k in INIT_FROM_KEEPS}
    return ModelConfig.from_dict({**meta['model'], **keep}), tokenizer_from_dict(meta['tokenizer'])
  tokenizer = tok.TOKENIZERS[config.model.get('tokenizer', 'esm')]()
  # The vocabulary and special ids are the tokenizer's, whatever the config's defaults say.
  ids = dict(
    vocab_size=tokenizer.vocab_size,
    pad_id=tokenizer.pad_id,
    cls_id=tokenizer.cls_id,
    eos_id=-1 if tokenizer.eos_id is None else tokenizer.eos_id,
    mask_id=tokenizer.mask_id,
  )
  fields = {k: v for k, v in config.model.items() if k != 'tokenizer'}
  return ModelConfig.from_dict({**fields, **ids}), tokenizer
