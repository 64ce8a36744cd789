"""`python -m gcp_storage_emulator` for the tests, without its quadratic cost.

The emulator re-serialises every object's metadata to its `.meta` file after each
write, in memory too (`--in-memory`: nothing reads it back). A study in a gs:// work
dir writes thousands of objects (one TensorStore array per parameter per checkpoint),
and each write then took longer than the last until clients' connections queued up
unanswered. Same arguments as the emulator.
"""

from gcp_storage_emulator import __main__ as emulator
from gcp_storage_emulator import storage

if __name__ == '__main__':
  storage.Storage._write_config_to_file = lambda self: None
  emulator.main()
