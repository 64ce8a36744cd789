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
NAMES = ('yaam', 'ptmdb', 'pretrain', 'synthetic', 'compare', 'sweep')


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

  bad = [a for a in overrides if not a.startswith('--config.')]
  if bad:
    raise ValueError(f'unknown arguments {bad}; overrides look like --config.optim.lr=3e-4')
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
  values(argv)
  return values.config
