"""Where host calls go: the Kiwano host when running as a component, else the in-memory host of
`kiwano.testing` (so the same handlers run under plain `python3`).

The WIT bindings (`wit_world`) exist only while componentize-py builds the component and inside
it; the stubs `componentize-py bindings` writes for editors import but do not run, so the real
host is chosen only when componentize-py's runtime module is there.
"""

from ._error import Error

try:
    import componentize_py_runtime  # noqa: F401  (only inside a component)
    from componentize_py_types import Err as _Err
    from wit_world import exports as wit_exports
    from wit_world.imports import groups as _groups
    from wit_world.imports import log as _log
    from wit_world.imports import metrics as _metrics
    from wit_world.imports import rpc as _rpc
    from wit_world.imports import timers as _timers
    from wit_world.imports import types as wit_types
    from wit_world.imports import users as _users
except ImportError:
    _Err = None
    wit_exports = None
    wit_types = None

IN_COMPONENT = wit_types is not None


def to_wit_error(e):
    return wit_types.Error(e.code, e.msg, list(e.metadata.items()))


def from_wit_error(e):
    return Error(e.code, e.msg, e.metadata)


if IN_COMPONENT:

    def call(f, *args):
        """Calls a host function, turning the bindings' `Err(error)` into `kiwano.Error`."""
        try:
            return f(*args)
        except _Err as e:
            raise from_wit_error(e.value) from None

else:

    def call(f, *args):
        """Calls a host function (in tests, the in-memory one raises `kiwano.Error` itself)."""
        return f(*args)


class _Wit:
    """The Kiwano host, through the bindings."""

    def push(self, route, body, uids):
        return call(_users.push, route, body, uids)

    def kick(self, uids):
        return call(_users.kick, uids)

    def group_create(self, name, ttl_ms):
        call(_groups.create, name, ttl_ms)

    def group_delete(self, name):
        call(_groups.delete, name)

    def group_add(self, name, uid):
        call(_groups.add, name, uid)

    def group_remove(self, name, uid):
        call(_groups.remove, name, uid)

    def group_remove_all(self, name):
        call(_groups.remove_all, name)

    def group_contains(self, name, uid):
        return call(_groups.contains, name, uid)

    def group_members(self, name):
        return call(_groups.members, name)

    def group_count(self, name):
        return call(_groups.count, name)

    def group_renew(self, name):
        call(_groups.renew, name)

    def group_broadcast(self, name, route, body):
        call(_groups.broadcast, name, route, body)

    def rpc(self, server_id, route, body, timeout_ms):
        if server_id is None:
            return call(_rpc.call, route, body, timeout_ms)
        return call(_rpc.call_to, server_id, route, body, timeout_ms)

    def timer_start(self, ms, repeat, payload):
        return (_timers.every if repeat else _timers.after)(ms, payload)

    def timer_cancel(self, id):
        return _timers.cancel(id)

    def log(self, level, message, fields):
        _log.log(_LEVELS[level], message, fields)

    def metric_declare(self, name, help, kind, labels, buckets):
        return call(_metrics.declare, _metrics.MetricSpec(name, help, _KINDS[kind], labels, buckets))

    def metric_add(self, id, labels, value):
        call(_metrics.add, id, labels, value)

    def metric_set(self, id, labels, value):
        call(_metrics.set, id, labels, value)

    def metric_observe(self, id, labels, value):
        call(_metrics.observe, id, labels, value)


if IN_COMPONENT:
    _LEVELS = {
        "trace": wit_types.Level.TRACE,
        "debug": wit_types.Level.DEBUG,
        "info": wit_types.Level.INFO,
        "warn": wit_types.Level.WARN,
        "error": wit_types.Level.ERROR,
    }
    _KINDS = {
        "counter": _metrics.MetricKind.COUNTER,
        "gauge": _metrics.MetricKind.GAUGE,
        "histogram": _metrics.MetricKind.HISTOGRAM,
    }
    _current = _Wit()
else:
    _current = None


def current():
    """The host serving this call."""
    if _current is None:
        from . import testing  # installs its in-memory host

        testing.install()
    return _current


def install(host):
    """Routes host calls to `host` (the in-memory host of `kiwano.testing`)."""
    global _current
    _current = host


def ms(seconds, what, limit):
    """A duration in seconds (int, float or `datetime.timedelta`) as whole milliseconds."""
    if hasattr(seconds, "total_seconds"):
        seconds = seconds.total_seconds()
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or a timedelta, not {type(seconds).__name__}")
    if not seconds >= 0:
        raise ValueError(f"{what} must be a non-negative number of seconds, not {seconds!r}")
    if seconds * 1000 >= limit:
        return limit
    return round(seconds * 1000)


def as_bytes(body, what="body"):
    """`bytes` exactly (componentize-py refuses a bytearray where the WIT has `list<u8>`)."""
    if type(body) is bytes:
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if body is None:
        return b""
    raise TypeError(f"{what} must be bytes, not {type(body).__name__}")
