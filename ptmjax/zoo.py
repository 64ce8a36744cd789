"""Trained models by name: the ones shipped inside the package, downloaded ones, local ones.

    ptmjax predict --fasta x.fasta --out sites.tsv --format sites      (the shipped default)
    ptmjax predict --model https://host/m.zip#sha256=HEX --fasta x.fasta --out p.tsv
    ptmjax models                                   (what is shipped and downloaded)
    ptmjax models --pack RUN/final --out m.zip      (a folder to publish, with its sha256)

A model is named by, in this order: a shipped name (`ptmjax/shipped/NAME/`), a local
model folder (or a training work dir), a local `.zip`/`.tar.gz` of one, or an
http(s) URL of such an archive. A URL is fetched with `pooch` into the cache
(`$PTMJAX_CACHE`, else the user cache folder) only with its sha256, given as
`URL#sha256=HEX` or `--sha256`; a download that does not match (a wrong checksum, a
truncated transfer) is refused and nothing is unpacked. Unpacked folders are keyed
by the checksum, so a second call reuses them and never downloads again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil
import tarfile
import tempfile
import zipfile

from ptmjax import paths
from ptmjax.errors import ModelFolderError, UsageError
from ptmjax.run_dir import COMPACT_PARAMS, MODEL_FILE, PARAMS

log = logging.getLogger(__name__)

SHIPPED_ROOT = pathlib.Path(__file__).parent / 'shipped'
DEFAULT = 'yeast-proteinbert-small'
CARD_FILE = 'MODEL_CARD.md'
CARD_DATA = 'card.json'  # the model card's numbers, machine-readable (`ptmjax models`)
ARCHIVES = ('.zip', '.tar.gz', '.tgz')


def cache_dir() -> pathlib.Path:
  if os.environ.get('PTMJAX_CACHE'):
    return pathlib.Path(os.environ['PTMJAX_CACHE'])
  import pooch

  return pathlib.Path(pooch.os_cache('ptmjax'))


def is_model_folder(path) -> bool:
  path = pathlib.Path(path)
  return (path / MODEL_FILE).is_file() and (
    (path / COMPACT_PARAMS).is_file() or (path / PARAMS).is_dir()
  )


def shipped() -> dict[str, pathlib.Path]:
  """{name: folder} of the models inside the installed package."""
  if not SHIPPED_ROOT.is_dir():
    return {}
  return {p.name: p for p in sorted(SHIPPED_ROOT.iterdir()) if is_model_folder(p)}


def downloaded() -> dict[str, pathlib.Path]:
  root = cache_dir() / 'models'
  if not root.is_dir():
    return {}
  return {p.name: p for p in sorted(root.iterdir()) if is_model_folder(p)}


def sha256(path) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def split_url(spec: str, sha: str | None) -> tuple[str, str | None]:
  """'URL#sha256=HEX' -> (URL, HEX); a --sha256 given too must agree."""
  url, _, fragment = spec.partition('#')
  if fragment:
    key, _, value = fragment.partition('=')
    if key != 'sha256' or not value:
      raise UsageError(f'{spec}: the part after # must be sha256=HEX')
    if sha and sha.lower() != value.lower():
      raise UsageError(f'{spec}: --sha256 {sha} differs from the one in the URL')
    sha = value
  if sha is not None:
    sha = sha.lower()
    if len(sha) != 64 or any(ch not in '0123456789abcdef' for ch in sha):
      raise UsageError(f'sha256 {sha!r}: expected 64 hexadecimal digits')
  return url, sha


def resolve(spec: str | None = None, *, sha: str | None = None, announce=None) -> pathlib.Path:
  """The model folder `spec` names (see the module docstring); None is the shipped
  default. `announce(text)` is told which model is used when none was named."""
  if spec is None:
    models = shipped()
    if DEFAULT not in models:
      raise UsageError(
        f'no --checkpoint/--model given and this install has no shipped model {DEFAULT!r} '
        f'(expected under {SHIPPED_ROOT}); name a trained model folder'
      )
    if announce:
      announce(
        f'no --model given: using the shipped model {DEFAULT} (yeast; read '
        f'{models[DEFAULT] / CARD_FILE} for what its calls mean)'
      )
    return models[DEFAULT]
  if spec in shipped():
    return shipped()[spec]
  if spec.startswith(('http://', 'https://')):
    url, sha = split_url(spec, sha)
    if sha is None:
      raise UsageError(
        f'{url}: a downloaded model needs its sha256 (URL#sha256=HEX or --sha256 HEX); '
        '`ptmjax models --pack` prints it for a folder you publish'
      )
    return _fetch(url, sha)
  if paths.is_url(spec):
    # gs:// model folders are read in place (checkpoint.resolve_model_dir); `as_path`
    # refuses any other scheme with the one message every setting gives for it.
    return paths.as_path(spec, '--model')
  path = pathlib.Path(spec)
  if path.is_file() and spec.endswith(ARCHIVES):
    digest = sha256(path)
    if sha and digest != sha.lower():
      raise ModelFolderError(f'{path}: sha256 {digest}, expected {sha} (a different file?)')
    return _unpacked(path, digest)
  if path.exists():
    return path  # a model folder or work dir: checkpoint.resolve_model_dir checks it
  names = ', '.join(shipped()) or 'none in this install'
  raise UsageError(
    f'--model {spec}: not a shipped model ({names}), a folder, an archive or an http(s) URL'
  )


def _fetch(url: str, sha: str) -> pathlib.Path:
  target = cache_dir() / 'models' / f'{sha[:16]}'
  if is_model_folder(target):
    return target
  import pooch
  import requests

  downloads = cache_dir() / 'downloads'
  name = f'{sha[:16]}-{pathlib.PurePosixPath(url.split("?")[0]).name or "model.zip"}'
  try:
    archive = pooch.retrieve(
      url, known_hash=f'sha256:{sha}', fname=name, path=downloads, progressbar=False
    )
  except ValueError as e:  # pooch: the downloaded file's hash differs (it deletes it)
    raise ModelFolderError(
      f'{url}: the download does not match sha256 {sha} (a wrong checksum, or a truncated '
      f'or altered file); nothing was kept ({str(e).splitlines()[0]})'
    ) from None
  except requests.RequestException as e:
    raise ModelFolderError(f'{url}: download failed ({type(e).__name__}: {e})') from None
  return _unpacked(pathlib.Path(archive), sha)


def _unpacked(archive: pathlib.Path, digest: str) -> pathlib.Path:
  """The archive's model folder under the cache, unpacked once (into a scratch folder,
  renamed when complete: an interrupted unpack is never mistaken for a model)."""
  target = cache_dir() / 'models' / digest[:16]
  if is_model_folder(target):
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  scratch = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix='.unpack-'))
  try:
    _extract(archive, scratch)
    roots = [scratch] + [p for p in scratch.iterdir() if p.is_dir()]
    found = [p for p in roots if is_model_folder(p)]
    if len(found) != 1:
      raise ModelFolderError(
        f'{archive}: holds no model folder ({MODEL_FILE} with its weights) at its top level '
        'or one folder down'
      )
    if target.exists():
      shutil.rmtree(target)
    found[0].rename(target)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return target


def _extract(archive: pathlib.Path, out: pathlib.Path) -> None:
  try:
    if archive.name.endswith('.zip'):
      with zipfile.ZipFile(archive) as z:
        for member in z.namelist():  # no absolute paths or .. out of the folder
          if member.startswith('/') or '..' in pathlib.PurePosixPath(member).parts:
            raise ModelFolderError(f'{archive}: unsafe member path {member!r}')
        z.extractall(out)
    else:
      with tarfile.open(archive) as t:
        t.extractall(out, filter='data')
  except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
    raise ModelFolderError(f'{archive}: not a readable archive ({e})') from None


def pack(model_dir, out) -> str:
  """Zips a model folder for publishing; returns its sha256 (what --model URL#sha256= needs)."""
  model_dir = pathlib.Path(model_dir)
  if not is_model_folder(model_dir):
    raise UsageError(f'{model_dir}: not a model folder ({MODEL_FILE} and its weights)')
  out = pathlib.Path(out)
  if not out.name.endswith('.zip'):
    raise UsageError(f'{out}: name a .zip file')
  with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as z:
    for f in sorted(model_dir.rglob('*')):
      if f.is_file():
        z.write(f, pathlib.PurePosixPath(model_dir.name, f.relative_to(model_dir).as_posix()))
  return sha256(out)


def describe(folder: pathlib.Path) -> dict:
  """What `ptmjax models` prints of a folder: channels, size on disk, headline metrics."""
  meta = json.loads((folder / MODEL_FILE).read_text())
  info = meta.get('info', {})
  size = sum(f.stat().st_size for f in folder.rglob('*') if f.is_file())
  card = json.loads((folder / CARD_DATA).read_text()) if (folder / CARD_DATA).is_file() else {}
  return {
    'family': meta.get('model', {}).get('family', '?'),
    'channels': info.get('channels') or [],
    'megabytes': round(size / 1e6, 2),
    'summary': card.get('summary', ''),
  }


def list_models() -> list[dict]:
  rows = []
  for kind, models in (('shipped', shipped()), ('downloaded', downloaded())):
    for name, folder in models.items():
      rows.append({'name': name, 'kind': kind, 'path': str(folder), **describe(folder)})
  return rows
