"""Error types: every user-facing failure names the file, row or key that caused it."""


class DmlError(Exception):
    """Base class for errors that a user can fix by changing inputs or configuration."""


class ConfigError(DmlError, ValueError):
    """A params.yaml key, type or registry name is wrong."""


class DataError(DmlError, ValueError):
    """An input file, row or column is missing, corrupt or inconsistent."""


class IntegrityError(DmlError, ValueError):
    """A saved artefact (model, index, checkpoint) fails its checksum or shape check."""


class Interrupted(DmlError):
    """The user stopped the run (Ctrl-C); finished work is kept and the next run resumes."""

    #: What a shell reports for a command ended by SIGINT.
    exit_status = 130
