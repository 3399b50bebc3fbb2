"""Named groups of uids, held by the host (Pitaya's group service).

Failures raise `kiwano.Error` with Pitaya's messages: `group already exists`, `group not found`,
`member already exists in group`, `member not found in the group`, `memory group TTL not found`,
`empty uid`.
"""

from . import _host
from ._context import _encode

__all__ = ["create", "delete", "add", "remove", "remove_all", "contains", "members", "count", "renew", "broadcast", "broadcast_raw"]

_U64_MAX = (1 << 64) - 1


def create(name, ttl=None):
    """Creates a group; with `ttl` (seconds or a timedelta) it is deleted once it has not been
    renewed (or created) for that long."""
    ttl_ms = None if ttl is None else _host.ms(ttl, "ttl", _U64_MAX)
    _host.current().group_create(name, ttl_ms)


def delete(name):
    """Deletes a group and its members."""
    _host.current().group_delete(name)


def add(name, uid):
    """Adds a uid to a group."""
    _host.current().group_add(name, uid)


def remove(name, uid):
    """Removes a uid from a group."""
    _host.current().group_remove(name, uid)


def remove_all(name):
    """Removes every member of a group; the group stays."""
    _host.current().group_remove_all(name)


def contains(name, uid):
    """Whether a uid is in a group."""
    return _host.current().group_contains(name, uid)


def members(name):
    """The members of a group, in the order they were added."""
    return list(_host.current().group_members(name))


def count(name):
    """The number of members of a group."""
    return _host.current().group_count(name)


def renew(name):
    """Restarts a group's TTL (`memory group TTL not found` for a group without one)."""
    _host.current().group_renew(name)


def broadcast(name, route, value):
    """Pushes `value`, as JSON, on `route` to every member."""
    _host.current().group_broadcast(name, route, _encode(value))


def broadcast_raw(name, route, body):
    """Pushes bytes on `route` to every member."""
    _host.current().group_broadcast(name, route, _host.as_bytes(body))
