"""The package boundary: one installed package, imports that only run downhill, entry
points, named configs, and checkpoints written by the previous layout still loading."""

import ast
import csv
import json
import math
import pathlib
import shutil
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from ptmjax import configs
from ptmjax.studies import runs

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'ptmjax'
OLD = REPO / 'tests' / 'fixtures' / 'layout_0808f8c'

# Layers, lowest first: a module may import its own layer or lower ones, never higher.
LAYERS = (
  ('ptmjax', 'ptmjax.sharding', 'ptmjax.errors', 'ptmjax.paths', 'ptmjax.run_dir'),
  ('ptmjax.data',),
  ('ptmjax.models',),
  ('ptmjax.checkpoint', 'ptmjax.inference'),
  (
    'ptmjax.predict',
    'ptmjax.embed',
    'ptmjax.evaluation',
    'ptmjax.sites',
    'ptmjax.report_html',
    'ptmjax.zoo',
  ),
  ('ptmjax.training',),
  ('ptmjax.configs',),
  ('ptmjax.studies', 'ptmjax.commands'),  # commands: what the studies' and cli's entry points share
  ('ptmjax.cli',),
)


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _layer(module: str) -> int:
  best = (-1, -1)  # (prefix length, layer): the longest matching prefix decides
  for i, prefixes in enumerate(LAYERS):
    for p in prefixes:
      if module == p or module.startswith(p + '.'):
        best = max(best, (len(p), i))
  assert best[1] >= 0, f'{module} is in no layer: add it to LAYERS'
  return best[1]


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
  """ptmjax modules imported anywhere in the file, function bodies included (where
  circles used to hide)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from ptmjax.data import sources` imports ptmjax.data.sources, a module.
      names = [f'{node.module}.{a.name}' for a in node.names] + [node.module]
    else:
      continue
    for name in names:
      while name and name not in modules:
        name = name.rpartition('.')[0]
      if name:
        found.add(name)
  return found


@pytest.fixture(scope='module')
def import_graph():
  files = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
  modules = set(files)
  return {m: _imports(p, modules) - {m} for m, p in files.items()}


def test_no_upward_imports(import_graph):
  upward = [
    f'{m} imports {d}'
    for m, deps in import_graph.items()
    for d in deps
    # A package's __init__ importing its own modules is not upward.
    if _layer(d) > _layer(m) and not d.startswith(m + '.')
  ]
  assert not upward, upward


def test_no_import_circles(import_graph):
  # A module imported by its own package __init__ is an edge of the package, not a circle.
  graph = {
    m: {d for d in deps if not m.startswith(d + '.') and not d.startswith(m + '.')}
    for m, deps in import_graph.items()
  }
  state, circles = {}, []

  def visit(m, stack):
    state[m] = 'open'
    for d in sorted(graph.get(m, ())):
      if state.get(d) == 'open':
        circles.append(stack[stack.index(d) :] + [d])
      elif d not in state:
        visit(d, [*stack, d])
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])
  assert not circles, circles


def test_nothing_imports_the_cli_benchmarks_or_tests(import_graph):
  assert not [m for m, deps in import_graph.items() if 'ptmjax.cli' in deps]
  text = '\n'.join(p.read_text() for p in PACKAGE.rglob('*.py'))
  assert 'import benchmarks' not in text and 'from benchmarks' not in text
  assert 'experiments' not in {n.split('.')[0] for n in _all_imported_names()}


def _all_imported_names():
  for p in PACKAGE.rglob('*.py'):
    for node in ast.walk(ast.parse(p.read_text())):
      if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module:
        yield node.module


def _code_strings_and_family_tests(path: pathlib.Path):
  """(string constants outside docstrings, lines with `family ==` or `!=`) of a module."""
  tree = ast.parse(path.read_text())
  docs = {
    id(n.body[0].value)
    for n in ast.walk(tree)
    if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
  }  # fmt: skip
  strings = {
    n.value
    for n in ast.walk(tree)
    if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
  }

  def is_family(x):
    return (isinstance(x, ast.Attribute) and x.attr == 'family') or (
      isinstance(x, ast.Name) and x.id == 'family'
    )

  family = [
    n.lineno
    for n in ast.walk(tree)
    if isinstance(n, ast.Compare)
    and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in n.ops)
    and any(map(is_family, [n.left, *n.comparators]))
  ]
  return strings, family


def test_run_folder_names_and_family_tests_stay_in_their_owners():
  """Issue 26: the run-folder layout is `run_dir.RunDir`'s alone (no file name of it in
  code elsewhere), and only `models/` tests an encoder's family (the rest asks
  `PtmModel.traits`)."""
  from ptmjax.run_dir import RunDir

  names = set(RunDir.RECORD_FILES)
  for path in sorted(PACKAGE.rglob('*.py')):
    rel = path.relative_to(PACKAGE).as_posix()
    strings, family = _code_strings_and_family_tests(path)
    if rel != 'run_dir.py':
      assert not strings & names, f'{rel}: run-folder names {sorted(strings & names)}'
    if not rel.startswith('models/'):
      assert not family, f'{rel}: tests the model family at lines {family}'


@pytest.mark.parametrize('module', ['ptmjax.predict', 'ptmjax.embed', 'ptmjax.data.tokenizer'])
def test_inference_modules_do_not_load_tfds(module):
  code = f"import {module}, sys; assert 'tensorflow_datasets' not in sys.modules, 'tfds loaded'"
  subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO / 'tests', timeout=120)


def test_wheel_installs_one_package(tmp_path):
  """`pip install .` installs `ptmjax` only, with the builders' data files and the configs."""
  src = tmp_path / 'src'  # setuptools writes build/ into the source tree: not into the repo
  shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
    '.git', 'build', '*.egg-info', '__pycache__', '.venv', 'runs', 'tfds_data'))  # fmt: skip
  subprocess.run(
    [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(tmp_path), str(src)],
    check=True, timeout=300, capture_output=True,
  )  # fmt: skip
  (wheel,) = tmp_path.glob('ptmjax-*.whl')
  names = zipfile.ZipFile(wheel).namelist()
  top = {n.split('/')[0] for n in names if not n.split('/')[0].endswith('.dist-info')}
  assert top == {'ptmjax'}
  top_level = next(n for n in names if n.endswith('.dist-info/top_level.txt'))
  assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ['ptmjax']
  for needed in (
    'ptmjax/data/builders/yaam/yaam_dataset_builder.py',
    'ptmjax/data/builders/yaam/README.md',
    'ptmjax/data/builders/yaam/CITATIONS.bib',
    'ptmjax/data/builders/yaam/dummy_data/yaam_test.txt',
    'ptmjax/data/builders/ptmdb/dummy_data/dbptm/dbptm_sites.txt',
    'ptmjax/configs/compare.py',
    'ptmjax/studies/compare.py',
  ):
    assert needed in names, needed


# --- configs by name, entry points ----------------------------------------------------------
def test_configs_resolve_by_name_and_path(tmp_path):
  assert configs.resolve('yaam:tiny') == str(configs.HERE / 'yaam.py') + ':tiny'
  assert configs.resolve('compare') == str(configs.HERE / 'compare.py')
  # Older commands named the files under experiments/configs/.
  assert configs.resolve('experiments/configs/sweep.py:small') == (
    str(configs.HERE / 'sweep.py') + ':small'
  )
  own = tmp_path / 'mine.py'
  own.write_text((configs.HERE / 'synthetic.py').read_text())
  assert configs.resolve(f'{own}:test') == f'{own}:test'
  with pytest.raises(FileNotFoundError, match='not one of the shipped'):
    configs.resolve('nonexistent:tiny')
  c = configs.load('yaam:tiny', ['--config.optim.lr=0.5'])
  assert c.data.name == 'yaam' and c.optim.lr == 0.5 and c.model.num_layers == 2
  with pytest.raises(ValueError, match='overrides look like'):
    configs.load('yaam:tiny', ['--lr=0.5'])


def test_dataset_configs_are_deltas_of_one_base():
  from ptmjax.configs import common, ptmdb, synthetic, yaam

  base = common.resize(common.base(), 'small').to_dict()
  for module, name in ((yaam, 'yaam'), (ptmdb, 'ptmdb'), (synthetic, 'synthetic')):
    c = module.get_config()
    assert c.data.name == name
    assert set(c.to_dict()) == set(base)  # same sections, no config invents its own


@pytest.mark.parametrize('study', ['compare', 'sweep'])
def test_study_modules_run_as_scripts(study):
  out = subprocess.run(
    [sys.executable, '-m', f'ptmjax.studies.{study}', '--help'],
    capture_output=True, text=True, timeout=120, check=True,
  ).stdout  # fmt: skip
  assert '--config' in out and '--workdir' in out


def test_run_timing_sums_invocations(tmp_path):
  assert runs.read_timing(tmp_path) == {'seconds': 0.0, 'invocations': 0}
  runs.add_seconds(tmp_path / 'a', 2.5)
  assert runs.add_seconds(tmp_path / 'a', 1.0) == 3.5
  runs.add_seconds(tmp_path / 'b' / 'c', 4.0)
  assert runs.read_timing(tmp_path / 'a') == {'seconds': 3.5, 'invocations': 2}
  assert runs.total_seconds(tmp_path) == 7.5


# --- what the previous layout wrote ---------------------------------------------------------
def test_previous_layout_model_folder_predicts_as_before(tmp_path):
  """The model folder written at 0808f8c loads, and predicts what that code predicted."""
  from ptmjax import predict

  out = tmp_path / 'preds.tsv'
  predict.predict_fasta(OLD / 'model', OLD / 'proteins.fasta', out, progress=False)

  def rows(path):
    with open(path) as f:
      return list(csv.reader(f, delimiter='\t'))

  new, old = rows(out), rows(OLD / 'predictions.tsv')
  assert new[0] == old[0] and len(new) == len(old)
  for a, b in zip(new[1:], old[1:], strict=True):
    assert a[:3] == b[:3]
    for x, y in zip(a[3:], b[3:], strict=True):
      # The old TSV has 4 decimals; NA (non-candidate) must stay NA.
      assert (x == 'NA') == (y == 'NA')
      if x != 'NA':
        assert math.isclose(float(x), float(y), abs_tol=1.5e-4), (a, b)


def test_previous_layout_dataset_loads_as_a_fresh_build(tmp_path):
  """A dataset built by the old layout (module `data_builders.yaam...` in its info) loads
  under the same builder name and version and holds what a build by this code holds."""
  from conftest import DUMMY_YAAM

  from ptmjax.data import sources

  old = sources.load('yaam', OLD / 'tfds')
  sources.build('yaam', DUMMY_YAAM, tmp_path)
  new = sources.load('yaam', tmp_path)
  assert {k: len(v) for k, v in old.items()} == {k: len(v) for k, v in new.items()}
  for split in new:
    for a, b in zip(old[split], new[split], strict=True):
      assert a['id'] == b['id'] and a['sequence'] == b['sequence']
      np.testing.assert_array_equal(a['labels'], b['labels'])


def test_init_from_a_relative_model_folder(monkeypatch):
  """`init_from.path` relative to the working directory, as the quickstart's
  `--workdir runs/quickstart` gives it (Orbax needs absolute paths)."""
  from ptmjax import checkpoint as ckpt

  model, _, _ = ckpt.load_model(OLD / 'model')
  params = nnx_params(model)
  monkeypatch.chdir(OLD.parent)
  merged, taken, skipped = ckpt.init_params_from(params, 'layout_0808f8c/model', ('ptm_head/.*',))
  assert taken and all(s.startswith('ptm_head/') for s in skipped) and skipped
  for x, y in zip(jax.tree.leaves(merged), jax.tree.leaves(params), strict=True):
    np.testing.assert_array_equal(x, y)


def nnx_params(model):
  from flax import nnx

  return nnx.state(model, nnx.Param).to_pure_dict()


def test_previous_layout_work_dir_resumes_to_the_uninterrupted_result(tmp_path):
  """A work dir interrupted under the old layout (saved at step 4 of 6) resumes with this
  code and ends where the old code's uninterrupted run ended."""
  import orbax.checkpoint as ocp

  from ptmjax.configs import synthetic
  from ptmjax.training import trainer

  workdir = tmp_path / 'run'
  shutil.copytree(OLD / 'interrupted', workdir)
  c = synthetic.get_config('test')
  c.sharding.num_devices = 1
  c.sharding.mesh = {'data': 1}
  c.optim.total_steps = 6
  trainer.train(c, workdir)

  def losses(path):
    rows = [json.loads(x) for x in pathlib.Path(path).read_text().splitlines()]
    return {r['step']: r['loss'] for r in rows if 'loss' in r}

  resumed, reference = losses(workdir / 'metrics.jsonl'), losses(OLD / 'complete_metrics.jsonl')
  assert sorted(resumed) == list(range(1, 7))
  np.testing.assert_allclose(
    [resumed[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], rtol=1e-6
  )

  def params(path):
    ckptr = ocp.PyTreeCheckpointer()
    tree = ckptr.metadata(path).item_metadata.tree
    args = ocp.args.PyTreeRestore(
      restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    )
    return ckptr.restore(path, args=args)

  new, old = params(workdir / 'final' / 'params'), params(OLD / 'model' / 'params')
  assert jax.tree.structure(new) == jax.tree.structure(old)
  for x, y in zip(jax.tree.leaves(new), jax.tree.leaves(old), strict=True):
    np.testing.assert_allclose(x, y, atol=1e-6)


def test_benchmarks_find_the_repository():
  """benchmarks/ runs from a clone (not installed): its root and default data path."""
  from benchmarks import common

  assert common.REPO == REPO
  assert (common.REPO / 'benchmarks' / '__init__.py').is_file()


def test_a_seed_initialises_the_same_model_as_before():
  """Fresh models of a seed are what the code at 0808f8c made (same random stream order):
  the README's measured quickstart numbers stay reproducible. Digest checked against
  that revision's create_model."""
  from flax import nnx

  from ptmjax import checkpoint
  from ptmjax.models import ModelConfig, create_model

  cfg = ModelConfig(
    num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32, ptm_head='conv', head_dim=8
  )
  params = nnx.state(create_model(cfg, 0), nnx.Param).to_pure_dict()
  assert (
    checkpoint.params_digest(params)
    == '902d14f34b73c0dbf3506c686a21871b270f65876716ed1ea7501cb24438c9b7'
  )
