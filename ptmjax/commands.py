"""What every command-line entry point shares: logging set-up, the study arguments, and
expected failures as one line with exit code 2 instead of a traceback.

Used by `ptmjax.cli` (the `ptmjax` command) and by the studies' own
`python -m ptmjax.studies.<name>` entry points; it imports nothing heavy.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable


def setup_logging() -> None:
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
  for noisy in ('absl', 'jax'):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def add_study_arguments(parser: argparse.ArgumentParser, config_example: str, workdir_help: str):
  parser.add_argument(
    '--config', required=True, help=f'config name or file[:arg], e.g. {config_example}'
  )
  parser.add_argument('--workdir', required=True, help=workdir_help)


def study_config(name: str, args, overrides):
  """A study's locked config and the command line that reproduces it (for its provenance)."""
  from ptmjax import configs

  config = configs.load(args.config, overrides)
  parts = [f'ptmjax {name}', f'--config {args.config}', f'--workdir {args.workdir}', *overrides]
  return config, ' '.join(parts)


def run_guarded(prog: str, fn: Callable[[], int]) -> int:
  """Runs `fn`; bad input (the message names file, line, record) and missing files are the
  user's to fix: one line on stderr and exit 2, not a traceback."""
  from ptmjax.errors import Preempted, UserError

  try:
    return fn()
  except Preempted as e:  # a checkpoint was saved: re-running resumes (studies too)
    print(f'{prog}: preempted: {e}', file=sys.stderr)
    return e.exit_code
  except (UserError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
    print(f'{prog}: error: {e}', file=sys.stderr)
    return 2


def study_main(prog: str, run_from_args, doc: str, argv=None, config_example='NAME:small') -> int:
  """`python -m ptmjax.studies.<name> --config ... --workdir ... [--config.KEY=VALUE ...]`."""
  parser = argparse.ArgumentParser(
    prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  add_study_arguments(parser, config_example, 'the study work dir (re-running resumes)')
  args, rest = parser.parse_known_args(argv)
  setup_logging()
  return run_guarded(prog, lambda: run_from_args(args, rest))
