"""`ptmjax data build` as a user runs it."""

import subprocess
import sys

from conftest import DUMMY_PTMDB

from ptmjax import cli


def test_data_build_command(tmp_path, capsys):
  assert cli.main(['data', 'build', 'ptmdb', '--config', 'uniprot', '--manual-dir', str(DUMMY_PTMDB),
                   '--data-dir', str(tmp_path)]) == 0  # fmt: skip
  out = capsys.readouterr().out
  assert 'built ptmdb/uniprot/1.0.0' in out and '"uniprot/sites_residue_mismatch": 1' in out


def test_console_script_reports_missing_dir(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'ptmjax.cli', 'data', 'build', 'yaam', '--manual-dir', str(tmp_path / 'nope'),
       '--data-dir', str(tmp_path)],
      capture_output=True, text=True, check=False,
  )  # fmt: skip
  assert proc.returncode == 2  # the README's exit code for user errors, not 1 (a bug)
  assert 'nope does not exist' in proc.stderr and 'Traceback' not in proc.stderr
