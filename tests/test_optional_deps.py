"""`ptmjax train`, `predict` and `embed` run without `transformers` and `torch` (the
`ptmjax[hf]` extra): a process where importing either fails, as in a venv without them."""

import subprocess
import sys

from conftest import REPO

# A process in which `import transformers` / `import torch` fail, as where they are absent.
BLOCKED = """
import sys

class Absent:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('transformers', 'torch'):
      raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
    return None

sys.meta_path.insert(0, Absent())
from ptmjax import cli
code = cli.main(sys.argv[1:])
leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'torch'))
assert not leaked, leaked
sys.exit(code)
"""


def _ptmjax(*args):
  return subprocess.run(
    [sys.executable, '-c', BLOCKED, *args], cwd=REPO, capture_output=True, text=True, timeout=600
  )


def test_train_predict_embed_run_without_transformers_and_torch(tmp_path):
  work = tmp_path / 'run'
  train = _ptmjax('train', '--config', 'synthetic:test', '--workdir', str(work),
                  '--config.optim.total_steps=2', '--config.optim.warmup_steps=1',
                  '--config.eval.every_steps=2', '--config.eval.max_proteins=4',
                  '--config.progress=False')  # fmt: skip
  assert train.returncode == 0, train.stderr[-3000:]
  fasta = tmp_path / 'x.fasta'
  fasta.write_text('>P1\nMKSPEELRRSSTKGK\n>P2\nMSTPAKSYGK\n')
  predict = _ptmjax('predict', '--checkpoint', str(work / 'final'), '--fasta', str(fasta),
                    '--out', str(tmp_path / 'p.tsv'))  # fmt: skip
  assert predict.returncode == 0, predict.stderr[-3000:]
  assert len((tmp_path / 'p.tsv').read_text().splitlines()) == 1 + 15 + 10
  embed = _ptmjax('embed', '--checkpoint', str(work / 'final'), '--fasta', str(fasta),
                  '--out', str(tmp_path / 'e.npz'))  # fmt: skip
  assert embed.returncode == 0, embed.stderr[-3000:]


def test_convert_hf_without_the_extra_names_it():
  proc = _ptmjax('convert-hf', '--model', 'facebook/esm2_t6_8M_UR50D', '--out', '/nonexistent')
  assert proc.returncode == 2, proc.stderr[-2000:]  # a user's missing extra, not a bug
  assert "pip install 'ptmjax[hf]'" in proc.stderr, proc.stderr[-2000:]
