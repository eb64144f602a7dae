"""Errors whose message reads well in a page: pages show ``str(error)``."""


class ChatError(Exception):
    """Base for every error the app shows to a person."""


class ValidationError(ChatError):
    """Input that cannot be accepted as given."""


class NotFound(ChatError):
    """An id that names nothing."""


class DatabaseLocked(ChatError):
    """Another process holds the database file."""


class DatabaseUnavailable(ChatError):
    """The database server cannot be reached right now (the app retries by itself)."""


class StorageError(ChatError):
    """The database's storage failed (disk full, read-only, I/O error): the write was not made; the app carries on."""


class DatabaseDamaged(ChatError):
    """The database file cannot be opened as the app's database: a person has to restore or replace it."""
