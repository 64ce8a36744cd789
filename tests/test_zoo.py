"""Models by name (`ptmjax.zoo`): a model folder published as a zip and fetched over http
from a server on 127.0.0.1 (never the internet) with its sha256; a wrong checksum and a
truncated transfer are refused and leave nothing in the cache; a second use never
downloads again."""

import http.server
import threading

import pytest
from conftest import json_numbers

from ptmjax import checkpoint as ckpt
from ptmjax import cli, zoo
from ptmjax.errors import ModelFolderError, UsageError


class _Server:
  """Serves `files` {url path: bytes}; `truncate` paths send half the body, either
  announcing the whole length (the connection drops mid-transfer) or only the half."""

  def __init__(self, files, truncate=None):
    self.hits = []
    outer = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):  # noqa: N802 - http.server's name
        outer.hits.append(self.path)
        body = files.get(self.path)
        if body is None:
          self.send_error(404)
          return
        mode = (truncate or {}).get(self.path)
        sent = body[: len(body) // 2] if mode else body
        self.send_response(200)
        self.send_header('Content-Length', str(len(body) if mode == 'dropped' else len(sent)))
        self.end_headers()
        self.wfile.write(sent)
        self.wfile.flush()
        if mode == 'dropped':
          self.close_connection = True

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def packed(quickstart_dir, tmp_path, monkeypatch):
  monkeypatch.setenv('PTMJAX_CACHE', str(tmp_path / 'cache'))
  archive = tmp_path / 'model.zip'
  digest = zoo.pack(ckpt.resolve_model_dir(quickstart_dir), archive)
  return archive.read_bytes(), digest


def _cached_files(tmp_path):
  root = tmp_path / 'cache'
  return sorted(p.name for p in root.rglob('*') if p.is_file()) if root.exists() else []


def test_url_with_its_sha256_is_fetched_once_and_predicts(packed, tmp_path, capsys):
  body, digest = packed
  server = _Server({'/m.zip': body})
  fasta = tmp_path / 'x.fasta'
  fasta.write_text('>P1\nMSTKYLLSPKRASTEY\n')
  try:
    url = f'{server.url}/m.zip#sha256={digest}'
    args = ['predict', '--model', url, '--fasta', str(fasta), '--format', 'sites']
    assert cli.main([*args, '--out', str(tmp_path / 'a.tsv')]) == 0
    assert cli.main([*args, '--out', str(tmp_path / 'b.tsv')]) == 0
  finally:
    server.close()
  assert server.hits == ['/m.zip']  # the second run used the cache
  assert (tmp_path / 'a.tsv').read_text() == (tmp_path / 'b.tsv').read_text()
  folder = zoo.resolve(url)  # the server is gone: served from the cache
  assert zoo.is_model_folder(folder) and folder.name == digest[:16]


def test_wrong_checksum_is_refused_and_nothing_is_kept(packed, tmp_path, capsys):
  body, digest = packed
  wrong = ('0' if digest[0] != '0' else '1') + digest[1:]
  server = _Server({'/m.zip': body})
  try:
    with pytest.raises(ModelFolderError, match='does not match sha256'):
      zoo.resolve(f'{server.url}/m.zip#sha256={wrong}')
    fasta = tmp_path / 'x.fasta'
    fasta.write_text('>P1\nMSTKY\n')
    code = cli.main(['predict', '--model', f'{server.url}/m.zip', '--sha256', wrong,
                     '--fasta', str(fasta), '--out', str(tmp_path / 'o.tsv')])  # fmt: skip
  finally:
    server.close()
  assert code == 2
  assert 'does not match sha256' in capsys.readouterr().err
  assert _cached_files(tmp_path) == []
  assert not (tmp_path / 'o.tsv').exists()


@pytest.mark.parametrize('mode', ['dropped', 'short'])
def test_truncated_download_is_refused_and_nothing_is_kept(packed, tmp_path, mode):
  """'dropped': the connection ends before the announced length; 'short': the server
  announces and sends half the file (only the checksum can tell)."""
  body, digest = packed
  server = _Server({'/m.zip': body}, truncate={'/m.zip': mode})
  try:
    with pytest.raises(ModelFolderError, match='download failed|does not match sha256'):
      zoo.resolve(f'{server.url}/m.zip#sha256={digest}')
  finally:
    server.close()
  assert _cached_files(tmp_path) == []


def test_url_without_a_checksum_is_refused_before_downloading(packed, tmp_path):
  server = _Server({'/m.zip': packed[0]})
  try:
    with pytest.raises(UsageError, match='needs its sha256'):
      zoo.resolve(f'{server.url}/m.zip')
  finally:
    server.close()
  assert server.hits == []


def test_local_archive_unpacks_once_and_checks_a_given_checksum(packed, tmp_path):
  body, digest = packed
  archive = tmp_path / 'local.zip'
  archive.write_bytes(body)
  first = zoo.resolve(str(archive), sha=digest)
  assert zoo.is_model_folder(first)
  assert zoo.resolve(str(archive)) == first
  with pytest.raises(ModelFolderError, match='expected'):
    zoo.resolve(str(archive), sha='f' * 64)


def _shipped_or_fail():
  folder = zoo.shipped().get(zoo.DEFAULT)
  assert folder is not None, f'the package ships no {zoo.DEFAULT} (ptmjax/shipped/)'
  return folder


def test_predict_without_a_model_uses_the_shipped_one(tmp_path, capsys):
  """The README's first command: no training, no --checkpoint; the shipped model says so."""
  folder = _shipped_or_fail()
  out = tmp_path / 'sites.tsv'
  code = cli.main(['predict', '--fasta', str(folder / 'example.fasta'), '--format', 'sites',
                   '--out', str(out), '--report', str(tmp_path / 'report')])  # fmt: skip
  assert code == 0
  assert f'using the shipped model {zoo.DEFAULT}' in capsys.readouterr().err
  rows = [x.split('\t') for x in out.read_text().splitlines() if not x.startswith('#')]
  header, body = rows[0], rows[1:]
  assert body, 'the shipped model calls no site on 20 yeast proteins'
  channels = {r[header.index('channel')] for r in body}
  assert channels <= {'phosphorylation', 'ubiquitination', 'acetylation', 'succinylation'}
  # The example's proteins that are YAAM training proteins carry their known labels.
  known = {r[header.index('known')] for r in body}
  assert known & {'0', '1'}
  assert (tmp_path / 'report' / 'index.html').is_file()


def test_models_lists_the_shipped_default_with_its_card(capsys):
  folder = _shipped_or_fail()
  assert cli.main(['models']) == 0
  out = capsys.readouterr().out
  assert f'{zoo.DEFAULT} (default)\tshipped\tproteinbert' in out
  assert (folder / zoo.CARD_FILE).read_text().startswith(f'# {zoo.DEFAULT}')
  card = zoo.describe(folder)
  assert card['megabytes'] < 10 and card['summary']


@pytest.mark.slow
def test_shipped_card_numbers_come_from_the_study_code(real_tfds):
  """The card's test metrics, recomputed from the shipped float16 weights with
  `ptmjax.studies.ship.evaluate` (the stage comparison's statistics) on the YAAM test split
  built from ../shared: the same numbers (~6 min on 2 cores)."""
  import json

  from ptmjax.studies import ship

  folder = _shipped_or_fail()
  card = json.loads((folder / zoo.CARD_DATA).read_text())
  ev = ship.evaluate(folder, real_tfds[0], card['bootstrap'])
  ev['run_info'] = {}
  again = ship.card_data(ev, folder.name)
  assert again['split'] == card['split']
  got = json_numbers(json.loads(json.dumps({'t': again['test'], 'h': again['thresholds']})))
  want = json_numbers({'t': card['test'], 'h': card['thresholds']})
  assert got.keys() == want.keys()
  assert got == pytest.approx(want, nan_ok=True)
