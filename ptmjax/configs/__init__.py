"""ml_collections configs of every training run and study, and how a command line names them.

A config is named by a file path or, for the configs shipped here, by its name:
`yaam:tiny` is `ptmjax/configs/yaam.py` with `get_config('tiny')`, wherever
ptmjax is installed. Each module's docstring gives its command, run time and
measured result. `load()` applies `--config.KEY=VALUE` overrides and locks the
config.
"""

from __future__ import annotations

import logging
import pathlib

log = logging.getLogger(__name__)

HERE = pathlib.Path(__file__).parent
# The configs a command line can name without a path (this folder's modules).
NAMES = ('yaam', 'ptmdb', 'pretrain', 'synthetic', 'compare', 'sweep', 'shipped')


def resolve(spec: str) -> str:
  """'name[:arg]' or 'path/to/file.py[:arg]' -> 'absolute/file.py[:arg]'.

  A path that does not exist but whose file name is a shipped config (e.g. the
  `experiments/configs/compare.py` of older commands) resolves to the shipped one.
  """
  file, sep, arg = spec.partition(':')
  path = pathlib.Path(file).expanduser()
  if path.is_file():
    return str(path.resolve()) + sep + arg
  name = path.name.removesuffix('.py')
  if name in NAMES and (path.suffix in ('', '.py')):
    if str(path) != name:
      log.info('config %s not found; using the shipped %s', file, HERE / f'{name}.py')
    return str(HERE / f'{name}.py') + sep + arg
  raise FileNotFoundError(f'config {file!r}: no such file, and not one of the shipped {NAMES}')


def load(spec: str, overrides=()):
  """The config `spec` names, with `--config.KEY=VALUE` overrides applied, locked."""
  from absl import flags
  from ml_collections import config_flags

  from ptmjax.errors import UsageError

  bad = [a for a in overrides if not a.startswith('--config.')]
  if bad:
    raise UsageError(f'unknown arguments {bad}; overrides look like --config.optim.lr=3e-4')
  values = flags.FlagValues()
  argv = ['ptmjax', f'--config={resolve(spec)}', *overrides]
  config_flags.DEFINE_config_file(
    'config',
    None,
    'ml_collections config file[:arg]',
    flag_values=values,
    lock_config=True,
    sys_argv=argv,  # else the overrides are looked up in sys.argv (wrong when called in-process)
  )
  try:
    values(argv)
  except (AttributeError, KeyError) as e:  # a key the config does not have
    raise UsageError(_unknown_key(spec, overrides, e)) from None
  except flags.Error as e:  # a value of the wrong type
    raise UsageError(f'config {spec}: {e}') from None
  config = values.config
  validate(config, spec)
  return config


# Names users bring from other libraries, for the "did you mean" hint.
ALIASES = {'learning_rate': 'lr', 'steps': 'total_steps', 'max_steps': 'total_steps',
           'batch': 'batch_size', 'seq_len': 'max_len', 'warmup': 'warmup_steps'}  # fmt: skip


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
  return out


def _unknown_key(spec, overrides, error) -> str:
  """'--config.optim.learning_rate=1e-3: no such setting; did you mean optim.lr?'"""
  import difflib

  keys = list(_flatten(load_plain(spec).to_dict()))
  for arg in overrides:
    key = arg.removeprefix('--config.').split('=', 1)[0]
    if key not in keys and not any(k.startswith(key + '.') for k in keys):
      section, _, leaf = key.rpartition('.')
      leaf = ALIASES.get(leaf, leaf)
      siblings = [k for k in keys if k.rpartition('.')[0] == section]
      close = difflib.get_close_matches(f'{section}.{leaf}'.strip('.'), siblings or keys, 1, 0.5)
      close = close or difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
      hint = f'; did you mean {close[0]}?' if close else ''
      return f'{arg}: no such setting in config {spec}{hint}'
  return f'config {spec}: {error} ({" ".join(overrides)})'


def load_plain(spec: str):
  """The config `spec` names, without overrides or checks."""
  import importlib.util

  file, _, arg = resolve(spec).partition(':')
  module_spec = importlib.util.spec_from_file_location('_ptmjax_config', file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def validate(config, spec: str = '') -> None:
  """Refuses settings that cannot train, before any work starts (issue 28: a negative lr,
  `max_len=2` or `batch_size=0` ran to exit 0 and wrote a model). Checks the training
  sections where present: a study's stage configs are checked as stages."""
  from ptmjax.errors import UsageError

  for name in ('stage0', 'stage1', 'stage2', 'single', 'joint', 'count'):
    if name in config and 'optim' in config[name]:
      validate(config[name], f'{spec} {name}')
  if 'optim' not in config or 'data' not in config:
    return
  o, d = config.optim, config.data
  where = f'config {spec}'.strip()
  problems = []
  if not o.lr > 0:
    problems.append(f'optim.lr={o.lr}: must be > 0')
  if o.total_steps < 1:
    problems.append(f'optim.total_steps={o.total_steps}: must be >= 1')
  if o.warmup_steps < 0 or (o.total_steps >= 1 and o.warmup_steps >= o.total_steps):
    problems.append(
      f'optim.warmup_steps={o.warmup_steps}: must be >= 0 and below optim.total_steps='
      f'{o.total_steps}'
    )
  if o.get('grad_accum_steps', 1) < 1:
    problems.append(f'optim.grad_accum_steps={o.grad_accum_steps}: must be >= 1')
  if d.batch_size < 1:
    problems.append(f'data.batch_size={d.batch_size}: must be >= 1')
  if d.get('main_repeat', 1) < 1:
    problems.append(f'data.main_repeat={d.main_repeat}: must be >= 1')
  # A window holds the special tokens (one or two) and at least one residue.
  if d.max_len < 3:
    problems.append(f'data.max_len={d.max_len}: must be >= 3 (special tokens + a residue)')
  if problems:
    raise UsageError(f'{where}: ' + '; '.join(problems))
