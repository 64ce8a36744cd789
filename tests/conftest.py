"""Test set-up: 8 fake CPU devices, and where the real shared data lives."""

import os
import pathlib

# Before JAX is imported anywhere: sharding tests get a real 2x4 CPU mesh.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DUMMY_YAAM = REPO / 'data_builders' / 'yaam' / 'dummy_data'
DUMMY_PTMDB = REPO / 'data_builders' / 'ptmdb' / 'dummy_data'


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
  """`../shared/data` beside the repo (or $PTMJAX_SHARED_DATA); CI has it too."""
  path = pathlib.Path(os.environ.get('PTMJAX_SHARED_DATA', REPO.parent / 'shared' / 'data'))
  if not (path / 'yaam').is_dir():
    pytest.fail(f'real data not found at {path}; set PTMJAX_SHARED_DATA')
  return path
