"""Local paths and Cloud Storage (`gs://`) URLs, for work dirs, model folders and data dirs.

`pathlib.Path('gs://b/r')` is the local folder `gs:/b/r`: a run once wrote its
config, metrics and checkpoints to local disk and crashed later on the mangled
name. Here a `gs://` URL becomes an `etils.epath.Path` (read and written through
gcsfs), which Orbax, TensorStore and TFDS take as they are; other URL schemes
(s3://, http://) are refused at the door, naming the setting, rather than made local.
"""

from __future__ import annotations

import pathlib
import re

_URL = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*://')
SUPPORTED = ('gs://',)


def is_url(path) -> bool:
  return bool(path) and bool(_URL.match(str(path)))


def is_remote(path) -> bool:
  """True for an object-store path (a gs:// URL or an epath.Path of one)."""
  return str(path).startswith(SUPPORTED)


def require_supported(path, what: str) -> None:
  """Raises UsageError for a URL of a scheme ptmjax does not handle (only gs:// is)."""
  from ptmjax.errors import UsageError

  if is_url(path) and not is_remote(path):
    raise UsageError(
      f'{what} {str(path)!r}: only local paths and gs:// URLs are supported (other URLs '
      'would be written to a local folder of that name); use a local path and copy the '
      'results, or a gs:// bucket'
    )


def as_path(path, what: str = 'path'):
  """A local `pathlib.Path`, or an `etils.epath.Path` for a gs:// URL."""
  require_supported(path, what)
  if is_remote(path):
    from etils import epath

    return epath.Path(str(path))
  return pathlib.Path(path)


def files_named(root, name: str) -> list:
  """Every file called `name` below `root`. On gs:// one prefix listing (epath refuses
  `rglob` there: a `**` glob may cost one request per folder)."""
  root = as_path(root)
  if not is_remote(root):
    return sorted(root.rglob(name))
  import fsspec

  fs = fsspec.filesystem('gcs')  # the file system epath itself uses for gs://
  found = fs.find(str(root).removeprefix('gs://'))
  return sorted(as_path(f'gs://{f}') for f in found if f.rsplit('/', 1)[-1] == name)


def absolute(path):
  """Absolute for local paths (Orbax reads no metadata from a relative one); URLs as is."""
  return path if is_remote(path) else pathlib.Path(path).absolute()


def require_local(path, what: str) -> None:
  """Raises UsageError for any URL: for what must be on this machine (a build's output)."""
  from ptmjax.errors import UsageError

  if is_url(path):
    raise UsageError(
      f'{what} {str(path)!r}: must be a local path (object-store URLs are not supported '
      'here); build locally, then copy it, e.g. `gcloud storage cp -r`'
    )
