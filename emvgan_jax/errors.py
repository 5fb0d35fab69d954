"""The errors a user can act on, raised by the library and shown by every command as one line.

A message says what went wrong, naming the file, flag or field, and what to do about it. The commands
(`emvgan_jax/tools/cli.py`) print it as `error: <message>` without a traceback: exit status 2 for a `UsageError`
(a flag, argument or config field that cannot be used), 1 for any other `Error` (data, checkpoints, a workdir, the
disk). The library's own error types derive from these (`config_lib.ConfigError`, `data.splits.DataError`,
`runtime.checkpoint.CheckpointError`, `runtime.workdir.WorkdirError`), so a command needs to know only these two.
"""


class Error(Exception):
  """An error the user can fix; its message says what to do."""


class UsageError(Error):
  """An argument, flag or config field that cannot be used."""
