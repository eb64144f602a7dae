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
