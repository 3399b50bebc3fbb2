"""The host's log; records are tagged with the server type, instance, route and session.

Keyword arguments become structured fields: `log.info("joined", uid=uid, room="lobby")`.
"""

from . import _host

__all__ = ["log", "trace", "debug", "info", "warn", "error", "LEVELS"]

LEVELS = ("trace", "debug", "info", "warn", "error")


def log(level, message, **fields):
    """A record at `level` (`"trace"`, `"debug"`, `"info"`, `"warn"` or `"error"`)."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: one of {', '.join(LEVELS)}")
    _host.current().log(level, str(message), [(str(k), str(v)) for k, v in fields.items()])


def trace(message, **fields):
    """A trace record."""
    log("trace", message, **fields)


def debug(message, **fields):
    """A debug record."""
    log("debug", message, **fields)


def info(message, **fields):
    """An info record."""
    log("info", message, **fields)


def warn(message, **fields):
    """A warning."""
    log("warn", message, **fields)


def error(message, **fields):
    """An error record."""
    log("error", message, **fields)
