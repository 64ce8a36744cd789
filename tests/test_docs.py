"""The README stays short and its links resolve; the docs build as an mkdocs site with
`--strict`, so a broken link, a missing anchor or a page left out of the nav fails."""

import pathlib
import re
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
LINK = re.compile(r'\]\(([^)#\s]+)(#[^)]*)?\)')


def test_readme_is_short_and_its_links_resolve():
  text = (REPO / 'README.md').read_text()
  assert len(text) <= 8000, f'README.md is {len(text)} characters; move detail to docs/'
  targets = [m.group(1) for m in LINK.finditer(text) if not m.group(1).startswith('http')]
  assert 'docs/index.md' in targets
  missing = [t for t in targets if not (REPO / t).exists()]
  assert not missing, f'README.md links to missing files: {missing}'


def test_every_docs_page_is_in_the_nav():
  nav = (REPO / 'mkdocs.yml').read_text()
  pages = sorted(p.name for p in (REPO / 'docs').glob('*.md'))
  assert pages and all(f': {p}' in nav for p in pages), pages


def _build(docs: pathlib.Path, tmp_path) -> subprocess.CompletedProcess:
  # Not -q: mkdocs counts strict-mode warnings through its log, which -q silences.
  return subprocess.run(
    [sys.executable, '-m', 'mkdocs', 'build', '--strict', '-f', str(docs / 'mkdocs.yml'),
     '-d', str(tmp_path / 'site')],
    capture_output=True, text=True, timeout=120,
  )  # fmt: skip


def test_docs_site_builds_strict(tmp_path):
  proc = _build(REPO, tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (tmp_path / 'site' / 'checkpoints' / 'index.html').is_file()


def test_a_broken_docs_link_fails_the_build(tmp_path):
  copy = tmp_path / 'repo'
  copy.mkdir()
  shutil.copy(REPO / 'mkdocs.yml', copy)
  shutil.copytree(REPO / 'docs', copy / 'docs')
  page = copy / 'docs' / 'predict.md'
  page.write_text(page.read_text().replace('(embeddings.md)', '(embeddings.md#no-such-part)'))
  proc = _build(copy, tmp_path)
  assert proc.returncode != 0 and 'no-such-part' in proc.stderr + proc.stdout
