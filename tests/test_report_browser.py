"""`ptmjax predict --report DIR` rendered in a real headless browser (Chromium from
Debian's packages, driven by selenium): the index lists every protein and links to its
page; a page draws one residue track per channel with a bar per candidate residue, the
threshold line and the known sites, at a size the layout gave it; its sites table holds
the sites `--format sites` writes; the screenshot is not blank.

Skips where Chromium or its driver is absent, except with PTMJAX_REQUIRE_BROWSER=1
(`.ci/run` installs them and sets it)."""

import csv
import io
import json
import os
import shutil

import numpy as np
import pytest

from ptmjax import cli, sites
from ptmjax.data import synthetic

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
DRIVER = shutil.which('chromedriver')
if not (CHROMIUM and DRIVER):
  if os.environ.get('PTMJAX_REQUIRE_BROWSER'):
    raise RuntimeError('PTMJAX_REQUIRE_BROWSER is set but chromium/chromedriver are not installed')
  pytest.skip(
    'needs chromium and chromedriver (apt-get install chromium chromium-driver)',
    allow_module_level=True,
  )
webdriver = pytest.importorskip('selenium.webdriver')


@pytest.fixture(scope='module')
def browser():
  from selenium.webdriver.chrome.service import Service

  opts = webdriver.ChromeOptions()
  opts.binary_location = CHROMIUM
  for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--window-size=1200,900',
               '--disable-dev-shm-usage'):  # fmt: skip
    opts.add_argument(flag)
  driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
  yield driver
  driver.quit()


@pytest.fixture(scope='module')
def report(quickstart_dir, tmp_path_factory):
  """A report of 4 synthetic proteins, the first one a 'training protein' with a known site."""
  root = tmp_path_factory.mktemp('report')
  proteins = {s['id'].decode(): s['sequence'].decode() for s in synthetic.generate(4, seed=5)}
  fasta = root / 'in.fasta'
  fasta.write_text(''.join(f'>{k}\n{v}\n' for k, v in proteins.items()))
  model = root / 'model'
  shutil.copytree(quickstart_dir / 'final', model)
  first = next(iter(proteins))
  known_pos = 1 + next(i for i, r in enumerate(proteins[first]) if r in 'ST')
  (model / sites.KNOWN_FILE).write_text(
    json.dumps({sites.sequence_key(proteins[first]): {'phosphorylation': [known_pos]}})
  )
  out = root / 'pages'
  base = ['predict', '--checkpoint', str(model), '--fasta', str(fasta)]
  assert cli.main([*base, '--out', str(root / 'sites.tsv'), '--format', 'sites',
                   '--report', str(out)]) == 0  # fmt: skip
  assert cli.main([*base, '--out', str(root / 'residues.tsv')]) == 0
  residues = [
    r
    for r in csv.DictReader(
      [x for x in (root / 'residues.tsv').read_text().splitlines() if not x.startswith('#')],
      delimiter='\t',
    )
  ]
  called = [
    r
    for r in csv.DictReader(
      [x for x in (root / 'sites.tsv').read_text().splitlines() if not x.startswith('#')],
      delimiter='\t',
    )
  ]
  return {'dir': out, 'proteins': proteins, 'residues': residues, 'sites': called,
          'first': first, 'known_pos': known_pos}  # fmt: skip


def _by(css):
  from selenium.webdriver.common.by import By

  return By.CSS_SELECTOR, css


def test_index_lists_every_protein_and_links_to_its_page(browser, report):
  browser.get((report['dir'] / 'index.html').as_uri())
  rows = browser.find_elements(*_by('table#proteins tr'))[1:]
  assert [r.find_element(*_by('a')).text for r in rows] == list(report['proteins'])
  rows[0].find_element(*_by('a')).click()
  assert report['first'] in browser.title or report['first'] in browser.page_source
  assert browser.find_elements(*_by('svg.track'))


def test_page_draws_each_channel_with_its_candidates_threshold_and_known_sites(browser, report):
  pid = report['first']
  channels = [k for k in report['residues'][0] if k not in ('protein', 'position', 'residue')]
  channels = [c for c in channels if not c.endswith('_call')]
  index = report['dir'] / 'index.html'
  browser.get(index.as_uri())
  browser.find_element(*_by('table#proteins a')).click()
  tracks = browser.find_elements(*_by('svg.track'))
  assert sorted(t.get_attribute('data-channel') for t in tracks) == sorted(channels)
  mine = [r for r in report['residues'] if r['protein'] == pid]
  for track in tracks:
    c = track.get_attribute('data-channel')
    want = sorted(int(r['position']) for r in mine if r[c] != 'NA')
    got = sorted(
      int(e.get_attribute('data-position')) for e in track.find_elements(*_by('rect.candidate'))
    )
    assert got == want
    # Laid out by the browser: the track has a real size on the page.
    assert track.size['width'] >= 300 and track.size['height'] > 20
    assert len(track.find_elements(*_by('line.threshold'))) == 1
  phos = next(t for t in tracks if t.get_attribute('data-channel') == 'phosphorylation')
  known = phos.find_elements(*_by('polygon.known'))
  assert [int(k.get_attribute('data-position')) for k in known] == [report['known_pos']]


def test_sites_table_holds_the_sites_format_rows(browser, report):
  pid = report['first']
  browser.get((report['dir'] / 'index.html').as_uri())
  browser.find_element(*_by('table#proteins a')).click()
  rows = browser.find_elements(*_by('table.sites tr'))[1:]
  want = [r for r in report['sites'] if r['protein'] == pid]
  assert len(rows) == len(want) > 0
  cells = rows[0].find_elements(*_by('td'))
  assert [c.text for c in cells][:3] == [want[0]['position'], want[0]['residue'],
                                         want[0]['channel']]  # fmt: skip


def test_screenshot_is_not_blank(browser, report, tmp_path):
  from PIL import Image

  browser.get((report['dir'] / 'index.html').as_uri())
  browser.find_element(*_by('table#proteins a')).click()
  png = browser.get_screenshot_as_png()
  image = np.asarray(Image.open(io.BytesIO(png)).convert('RGB'))
  assert image.shape[0] > 100 and image.shape[1] > 100
  colours = np.unique(image.reshape(-1, 3), axis=0)
  assert len(colours) > 20  # text, bars, lines: not one flat colour
  white = (image == 255).all(-1).mean()
  assert white < 0.98
