"""Slows every training step of a Python process from outside the trainer: with this folder
on PYTHONPATH (`conftest.slow_steps_env`), each batch the trainer draws waits
PTMJAX_TEST_BATCH_DELAY_S seconds first, long enough for a test to deliver a signal
mid-run. The production loop has no test-only sleep."""

import os
import time

_DELAY = float(os.environ.get('PTMJAX_TEST_BATCH_DELAY_S', 0) or 0)

if _DELAY:
  from ptmjax.data import pipeline

  _next = pipeline.Iterator.__next__

  def _slow_next(self):
    time.sleep(_DELAY)
    return _next(self)

  pipeline.Iterator.__next__ = _slow_next
