"""The exceptions that mean a user's mistake: a bad config, bad data or bad flags.

The command line reports these as one line on stderr and exits with status 2, without a
traceback; any other exception is a bug in the code and keeps its traceback.
"""


class UserError(Exception):
  """A mistake the user can fix; the message says what and where."""


class ConfigError(UserError, ValueError):
  """A config field's value cannot work; the message starts with the field's name."""


class DataError(UserError, ValueError):
  """A data file is missing, unreadable or malformed; the message starts with the file's path."""


class FlagError(UserError):
  """A command-line flag's value cannot work (an --out that exists, a --workdir without
  checkpoints); the message starts with the flag."""
