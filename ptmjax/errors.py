"""Errors a user fixes, not bugs: the CLI prints them as one line and exits 2.

Light on purpose (no JAX, no Orbax): every entry point imports it to catch them.
"""


class ModelFolderError(ValueError):
  """A model folder that cannot be trusted: corrupted, truncated, or not one at all."""


class WorkdirError(ValueError):
  """A work dir that holds another run's checkpoints (the message names what differs)."""


class NonFiniteOutputError(ValueError):
  """A model produced NaN or infinity; never written out as a result."""
