"""An in-memory host, so a server's handlers run under plain `python3` (unittest, pytest...).

Importing this module routes every host call (`users`, `groups`, `rpc`, `timers`, `log`) to a
host held in memory by this process: groups, uid bindings, recorded timers and log records, and
an RPC responder. `MockSession` stands for a client's session; `Context(session)` (or
`session.context()`) is the call context of a message from it, and `server.call(session, ...)`
runs a handler for it::

    import kiwano
    from kiwano import testing

    testing.reset()
    alice = testing.MockSession(1)
    assert server.call(alice, "room.join", {"name": "alice"}) == {"code": 0}
    assert alice.uid == "alice"
    assert alice.pushes == [("onMembers", b'{"members":[]}')]

Binding a session (`ctx.bind(uid)` or `bind_user(uid, session)`) routes pushes and kicks for the
uid to it; a session that held the uid before is marked `displaced`, as on the host when a player
reconnects.
"""

import dataclasses

from . import _host, _json
from ._error import Error

__all__ = [
    "MockSession",
    "MockTimer",
    "reset",
    "install",
    "bind_user",
    "on_rpc",
    "rpc_calls",
    "set_max_timers",
    "timers",
    "group_members",
    "groups",
    "logs",
    "log_records",
]


def _debug_str(s):
    # Rust's `{:?}` of a string, as the host words "already bound" errors.
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MockSession:
    """A client's session for unit tests: its uid, data, and the pushes and kick it received.

    Attributes (read them in assertions):

    - `id`: the session id.
    - `uid`: the bound uid, or None.
    - `data`: the session data, a dict of JSON values.
    - `pushes`: what was pushed to it, as `(route, bytes)`; `pushes_json()` decodes them.
    - `kicked`: whether it was kicked.
    - `displaced`: whether a newer session bound its uid since.
    - `pins`: `(server type, server id)` pins set on it.
    - `handshake`, `remote_address`: what it reports.
    """

    def __init__(self, id, handshake=None, remote_address="127.0.0.1:5000"):
        self.id = id
        self.handshake = {} if handshake is None else handshake
        self.remote_address = remote_address
        self.uid = None
        self.data = {}
        self.pushes = []
        self.kicked = False
        self.displaced = False
        self.pins = []

    def context(self):
        """The `kiwano.Context` of a call from this session."""
        from ._context import Context

        return Context(self)

    def pushes_json(self):
        """The pushes, their bodies decoded from JSON: `[(route, value)]`."""
        return [(route, _json.loads(body)) for route, body in self.pushes]

    def _call_context(self):
        return _MockCallContext(self)

    def __repr__(self):
        return f"<MockSession {self.id} uid={self.uid!r}>"


class _MockCallContext:
    """The `call-context` resource of the WIT, answered by a MockSession."""

    __slots__ = ("s",)

    def __init__(self, session):
        self.s = session

    def session_id(self):
        return self.s.id

    def uid(self):
        return self.s.uid

    def bind(self, uid):
        if not uid:
            raise Error("PIT-400", "illegal uid: the uid is empty")
        if self.s.uid is not None:
            raise Error("PIT-400", f"session is already bound to an uid ({_debug_str(self.s.uid)})")
        self.s.uid = uid
        bind_user(uid, self.s)

    def displaced(self):
        return self.s.displaced

    def get(self, key):
        if key not in self.s.data:
            return None
        return _json.dumps(self.s.data[key]).decode("utf-8")

    def set(self, key, value):
        try:
            self.s.data[key] = _json.loads(value)
        except _json.JSONError as e:
            raise Error("PIT-400", f"invalid JSON: {e}") from None

    def data(self):
        return _json.dumps(self.s.data).decode("utf-8")

    def set_data(self, data):
        try:
            value = _json.loads(data)
        except _json.JSONError as e:
            raise Error("PIT-400", f"invalid JSON: {e}") from None
        if not isinstance(value, dict):
            raise Error("PIT-400", "session data must be a JSON object")
        self.s.data = value

    def push(self, route, body):
        self.s.pushes.append((route, bytes(body)))

    def kick(self):
        self.s.kicked = True

    def handshake(self):
        return _json.dumps(self.s.handshake).decode("utf-8")

    def remote_address(self):
        return self.s.remote_address

    def pin(self, server_type, server_id):
        self.s.pins.append((server_type, server_id))


@dataclasses.dataclass
class MockTimer:
    """A timer a server set."""

    #: Its id.
    id: int
    #: Delay or period, in milliseconds (as the host receives it).
    ms: int
    #: `every` rather than `after`.
    repeat: bool
    #: The payload.
    payload: bytes


class _MockHost:
    def __init__(self):
        self.users = {}
        self.groups = {}  # name -> [members, has_ttl]
        self.rpc_fn = None
        self.rpc_calls = []
        self.timers = []
        self.max_timers = None
        self.next_timer = 0
        self.logs = []

    def _group(self, name):
        g = self.groups.get(name)
        if g is None:
            raise Error("PIT-404", "group not found")
        return g

    def push(self, route, body, uids):
        missed = []
        for uid in uids:
            s = self.users.get(uid)
            if s is None:
                missed.append(uid)
            else:
                s.pushes.append((route, bytes(body)))
        return missed

    def kick(self, uids):
        missed = []
        for uid in uids:
            s = self.users.get(uid)
            if s is None:
                missed.append(uid)
            else:
                s.kicked = True
        return missed

    def group_create(self, name, ttl_ms):
        if name in self.groups:
            raise Error("PIT-400", "group already exists")
        self.groups[name] = [[], ttl_ms is not None]

    def group_delete(self, name):
        self._group(name)
        del self.groups[name]

    def group_add(self, name, uid):
        if not uid:
            raise Error("PIT-400", "empty uid")
        g = self._group(name)
        if uid in g[0]:
            raise Error("PIT-400", "member already exists in group")
        g[0].append(uid)

    def group_remove(self, name, uid):
        g = self._group(name)
        if uid not in g[0]:
            raise Error("PIT-404", "member not found in the group")
        g[0].remove(uid)

    def group_remove_all(self, name):
        self._group(name)[0].clear()

    def group_contains(self, name, uid):
        return uid in self._group(name)[0]

    def group_members(self, name):
        return list(self._group(name)[0])

    def group_count(self, name):
        return len(self._group(name)[0])

    def group_renew(self, name):
        if not self._group(name)[1]:
            raise Error("PIT-404", "memory group TTL not found")

    def group_broadcast(self, name, route, body):
        self.push(route, body, self.group_members(name))

    def rpc(self, server_id, route, body, timeout_ms):
        self.rpc_calls.append((server_id, route, bytes(body), timeout_ms))
        if self.rpc_fn is None:
            raise Error("PIT-500", f"no servers available of this type: {route.split('.')[0]}")
        return _host.as_bytes(self.rpc_fn(server_id, route, body), "an on_rpc answer")

    def timer_start(self, ms, repeat, payload):
        if self.max_timers is not None and len(self.timers) >= self.max_timers:
            return 0
        self.next_timer += 1
        self.timers.append(MockTimer(self.next_timer, ms, repeat, bytes(payload)))
        return self.next_timer

    def timer_cancel(self, id):
        before = len(self.timers)
        self.timers = [t for t in self.timers if t.id != id]
        return len(self.timers) != before

    def log(self, level, message, fields):
        self.logs.append((level, message, dict(fields)))


_mock = _MockHost()


def install():
    """Routes host calls to the in-memory host (done when this module is imported)."""
    _host.install(_mock)


def reset():
    """Clears the in-memory host: users, groups, the RPC responder, timers and logs."""
    global _mock
    _mock = _MockHost()
    install()


def bind_user(uid, session):
    """Routes pushes and kicks for `uid` to `session`. A session that held the uid before is
    displaced, as on the host when a player reconnects."""
    previous = _mock.users.get(uid)
    _mock.users[uid] = session
    if previous is not None and previous is not session:
        previous.displaced = True


def on_rpc(f):
    """Answers RPCs with `f(server_id, route, body: bytes) -> bytes` (`server_id` None for
    `rpc.call`); `f` may raise `kiwano.Error`. Without one, RPCs fail with `PIT-500 no servers
    available of this type`. Usable as a decorator."""
    _mock.rpc_fn = f
    return f


def rpc_calls():
    """The RPCs made so far, as `(server_id, route, body, timeout_ms)` (`server_id` None for
    `rpc.call`, `timeout_ms` None for the host's default)."""
    return list(_mock.rpc_calls)


def set_max_timers(n):
    """Caps the live timers as `servers.<type>.max_timers` does: past it, `timers.after` and
    `timers.every` raise `PIT-500`. None: no cap (the default)."""
    _mock.max_timers = n


def timers():
    """The live timers set so far (`MockTimer`s)."""
    return list(_mock.timers)


def group_members(name):
    """The members of a group, or None if it does not exist."""
    g = _mock.groups.get(name)
    return None if g is None else list(g[0])


def groups():
    """The names of the groups that exist."""
    return sorted(_mock.groups)


def logs():
    """The log records written so far, as `(level, message)`."""
    return [(level, message) for level, message, _ in _mock.logs]


def log_records():
    """The log records written so far, as `(level, message, fields)`."""
    return [(level, message, dict(fields)) for level, message, fields in _mock.logs]


if not _host.IN_COMPONENT:
    install()
