"""Whether a work dir may be reused: the same run finished already, a partial run resumes,
or a run trained with other settings is refused (issue 28: changed settings never reuse
old results silently)."""

from __future__ import annotations

import json

from ptmjax import checkpoint as ckpt
from ptmjax.errors import WorkdirError
from ptmjax.run_dir import RunDir


def finished_result(config, workdir) -> dict | None:
  """The stored metrics when `workdir/final` is this config's finished run, else None."""
  rd = RunDir.at(workdir)
  if not rd.is_finished():
    return None
  info = ckpt.read_meta(rd.final).get('info', {})
  stored = info.get('config')
  new = json.loads(config.to_json_best_effort())
  # The same run when no setting that changes results differs (`identity_changes`).
  same = isinstance(stored, dict) and not identity_changes(stored, new)
  # 'finished' marks runs that stopped early (patience) or keep their best step.
  done = info.get('finished') or info.get('step') == config.optim.total_steps
  return info.get('metrics', {}) if same and done else None


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


# Settings that change neither what is trained nor what is selected: a run may resume
# or be re-run with other values (where to log, how often to save, which devices).
IDENTITY_FREE = (
  'progress',
  'log_every_steps',
  'checkpoint.every_steps',
  'checkpoint.keep_best',
  'data.data_dir',
  'sharding.',
)


def identity_changes(stored: dict, new: dict) -> list[str]:
  """Keys of a run's resolved config that differ between `stored` and `new` (nested
  dicts) and change its result. Keys only one side has are settings added or removed
  since the run started (their defaults are the old behaviour): not a change."""
  a, b = _flatten(stored), _flatten(new)
  # LoRA off (rank 0, or a config from before the section) is one setting; on, its
  # rank counts even against a config that has no section.
  lora_on = bool(a.get('lora.rank') or b.get('lora.rank'))
  keys = {
    k
    for k in set(a) & set(b)
    if a[k] != b[k] and not k.startswith(IDENTITY_FREE) and (lora_on or not k.startswith('lora.'))
  }
  if lora_on and a.get('lora.rank', 0) != b.get('lora.rank', 0):
    keys.add('lora.rank')
  return sorted(keys)


def check_identity(config, workdir) -> None:
  """Refuses to reuse a finished or partial run trained with other settings (issue 28:
  a re-run with another lr resumed, trained 0 steps and rewrote `final/` and
  config.json to claim the new settings over the old weights)."""
  rd = RunDir.at(workdir)
  stored = rd.read_config()
  if stored is None:
    return
  keys = identity_changes(stored, json.loads(config.to_json_best_effort()))
  if 'init_from.path' in keys and _same_start(stored['init_from']['path'], config.init_from.path):
    keys.remove('init_from.path')  # the same weights under another path (a moved study)
  if keys:
    a, b = _flatten(stored), _flatten(json.loads(config.to_json_best_effort()))
    diffs = ', '.join(f'{k}: {a[k]!r} -> {b[k]!r}' for k in keys[:6])
    more = f' and {len(keys) - 6} more' if len(keys) > 6 else ''
    raise WorkdirError(
      f'{rd.root} holds a run trained with other settings ({diffs}{more}); use a new '
      '--workdir or the settings it was trained with (`ptmjax train --restart` moves an old '
      'run aside and starts again)'
    )


def _same_start(old: str, new: str) -> bool:
  """Whether two init_from paths hold the same weights: by their parameter checksums, or
  the old path no longer exists (the study folder was moved) and the new one is there."""
  try:
    new_meta = ckpt.read_meta(ckpt.resolve_model_dir(new)) if new else {}
  except (FileNotFoundError, ValueError):
    return False
  if not old or not new:
    return False
  try:
    old_meta = ckpt.read_meta(ckpt.resolve_model_dir(old))
  except FileNotFoundError:
    return True
  except ValueError:
    return False
  return bool(new_meta.get('params_sha256')) and (
    old_meta.get('params_sha256') == new_meta.get('params_sha256')
  )


def check_resumable(config, workdir) -> None:
  """Refuses, before anything is written, to resume checkpoints of a different model.

  A changed `model` section (or `init_from.path`, which sets the model) would restore
  checkpoints of one shape into another; other changes (the mesh, more steps) resume.
  """
  rd = RunDir.at(workdir)
  if not rd.config.is_file() or not rd.has_checkpoints():
    return
  stored = _flatten(rd.read_config())
  new = _flatten(json.loads(config.to_json_best_effort()))
  # LoRA adapters change the state's shape; without them (rank 0, or a config from before
  # the `lora` section) their other settings do not matter.
  lora_on = bool(stored.get('lora.rank') or new.get('lora.rank'))
  prefixes = ('model.', 'lora.') if lora_on else ('model.',)
  keys = sorted(
    k
    for k in set(stored) | set(new)
    if (k.startswith(prefixes) or k == 'init_from.path') and stored.get(k) != new.get(k)
  )
  if keys:
    diffs = ', '.join(f'{k}: {stored.get(k)!r} -> {new.get(k)!r}' for k in keys)
    raise WorkdirError(
      f'{rd.root} holds checkpoints of a different model ({diffs}); use a new --workdir, '
      'or the settings it was started with'
    )
