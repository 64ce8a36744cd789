"""Which paths ptmjax can use today: local ones.

Object-store URLs (`gs://bucket/run`, `s3://...`) used to go through `pathlib.Path`,
which turns `gs://b/r` into the local folder `gs:/b/r`: a run wrote its config,
metrics and checkpoints to local disk and crashed later on a mangled name. Until
work dirs, model folders and data dirs on object stores are supported end to end
(issue 16), such paths are refused at the door, naming the setting.
"""

from __future__ import annotations

import re

_URL = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*://')


def require_local(path, what: str) -> None:
  """Raises UsageError when `path` is a URL (gs://, s3://, http://, ...)."""
  from ptmjax.errors import UsageError

  if path and _URL.match(str(path)):
    raise UsageError(
      f'{what} {str(path)!r}: object-store and other URL paths are not supported yet (they '
      'would be written to a local folder of that name); use a local path, e.g. a disk '
      'on the VM, and copy the results with `gcloud storage cp -r`'
    )
