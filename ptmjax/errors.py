"""Errors a user fixes, not bugs: the CLI prints them as one line and exits 2 (a
preemption: 143 for SIGTERM, 130 for Ctrl-C, after a checkpoint).

Light on purpose (no JAX, no Orbax): every entry point imports it to catch them.
"""

import signal


class Preempted(Exception):
  """Raised after a SIGTERM (or Ctrl-C) checkpoint; re-running the command resumes."""

  def __init__(self, message: str, signum: int = signal.SIGTERM):
    super().__init__(message)
    self.signum = signum

  @property
  def exit_code(self) -> int:
    return 128 + int(self.signum)  # 143 for SIGTERM, 130 for Ctrl-C, as shells report them


class UserError(ValueError):
  """Every error a user fixes (bad input, settings, folders): `commands.run_guarded` prints
  it as one line and exits 2. Subclasses say what kind; messages name the file, line or
  setting where known."""


class ModelFolderError(UserError):
  """A model folder that cannot be trusted: corrupted, truncated, or not one at all."""


class UsageError(UserError):
  """A setting or argument that cannot work (the message says which and why)."""


class WorkdirError(UserError):
  """A work dir that holds another run's checkpoints (the message names what differs)."""


class NonFiniteOutputError(UserError):
  """A model produced NaN or infinity; never written out as a result."""
