"""Players by uid, wherever their session is: push to them and kick them."""

from . import _host
from ._context import _encode

__all__ = ["push", "push_raw", "kick"]


def _uids(uids):
    # A single uid is a common slip for a list of one: do not iterate its characters.
    return [uids] if isinstance(uids, str) else list(uids)


def push(route, value, uids):
    """Pushes `value`, as JSON, on `route` to the sessions bound to `uids`; returns the uids not
    reached (no session bound to them)."""
    return push_raw(route, _encode(value), uids)


def push_raw(route, body, uids):
    """Pushes bytes on `route` to the sessions bound to `uids`; returns the uids not reached."""
    return list(_host.current().push(route, _host.as_bytes(body), _uids(uids)))


def kick(uids):
    """Kicks the sessions bound to `uids`; returns the uids that had none."""
    return list(_host.current().kick(_uids(uids)))
