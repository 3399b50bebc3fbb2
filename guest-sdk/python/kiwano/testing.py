"""An in-memory host, so a server's handlers run under plain `python3` (unittest, pytest...).

Importing this module routes every host call (`users`, `groups`, `rpc`, `timers`, `log`,
`metrics`) to a host held in memory by this process: groups, uid bindings, recorded timers, log
records and metric values, and an RPC responder. `MockSession` stands for a client's session; `Context(session)` (or
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

Metrics are checked as the host checks them, with its messages (`metric_value`, `histogram` and
`declared_metrics` read what was recorded)::

    assert testing.metric_value("hits", ("red",)) == 2.0
    assert testing.histogram("size", ("small",)) == (1, 3.0)
"""

import dataclasses
import math
import re
from decimal import Decimal

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
    "MockMetric",
    "declared_metrics",
    "metric_value",
    "histogram",
    "set_max_metric_series",
]


def _debug_str(s):
    # Rust's `{:?}` of a string, as the host words "already bound" errors and names metrics.
    out = []
    for ch in s:
        c = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif c == 0:
            out.append("\\0")
        elif c < 0x20 or c == 0x7F:
            out.append(f"\\u{{{c:x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


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


@dataclasses.dataclass
class MockMetric:
    """A metric declared to the in-memory host."""

    #: The id the host gave it (the same for every declaration of the name).
    id: int
    #: Its name, as declared (not the exported `kiwano_guest_..`).
    name: str
    #: Its help text.
    help: str
    #: `"counter"`, `"gauge"` or `"histogram"`.
    kind: str
    #: Its label names.
    labels: tuple
    #: A histogram's bucket bounds, as declared.
    buckets: tuple


# The in-memory host's server type, in the messages that name one.
_SERVER_TYPE = "test"
_METRIC_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_RESERVED_LABELS = ("server_type", "game", "le", "quantile")
# A histogram's buckets when none are given (the Prometheus defaults).
_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_OPS = {"counter": ("add",), "gauge": ("add", "set"), "histogram": ("observe",)}


def _rust_f64(v):
    """A float as Rust's `{}` writes it: the shortest digits, never an exponent (`-1`, `-0.5`,
    `0.0000001`)."""
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "inf" if v > 0 else "-inf"
    text = format(Decimal(repr(v)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _exported(name, kind):
    """The exported name, which is what makes two declarations one metric."""
    return name if kind != "counter" or name.endswith("_total") else name + "_total"


def _check_spec(name, help, kind, labels, buckets):
    """The host's checks of a spec, in its order and words (`{:?}` names quoted as Rust does)."""
    q = _debug_str(name)
    if not _METRIC_NAME.match(name) or len(name.encode("utf-8")) > 64:
        raise Error("PIT-400", f"metric name {q} must match [a-z][a-z0-9_]* and be at most 64 bytes")
    if name.endswith(("_bucket", "_count", "_sum")):
        raise Error("PIT-400", f"metric name {q} must not end in _bucket, _count or _sum")
    if name.endswith("_total") and kind != "counter":
        raise Error("PIT-400", f"metric name {q}: only a counter's name may end in _total")
    if not help:
        raise Error("PIT-400", f"metric {q}: help must not be empty")
    n = len(help.encode("utf-8"))
    if n > 256:
        raise Error("PIT-400", f"metric {q}: help of {n} bytes is over 256")
    if len(labels) > 8:
        raise Error("PIT-400", f"metric {q}: at most 8 labels")
    for i, label in enumerate(labels):
        ql = _debug_str(label)
        if not _METRIC_NAME.match(label) or len(label.encode("utf-8")) > 64:
            raise Error("PIT-400", f"metric {q}: label name {ql} must match [a-z][a-z0-9_]* and be at most 64 bytes")
        if label in _RESERVED_LABELS:
            raise Error("PIT-400", f"metric {q}: label name {ql} is reserved")
        if label in labels[:i]:
            raise Error("PIT-400", f"metric {q}: label name {ql} appears twice")
    if kind != "histogram":
        if buckets:
            raise Error("PIT-400", f"metric {q}: only a histogram has buckets")
        return ()
    if not buckets:
        return _DEFAULT_BUCKETS
    if len(buckets) > 32 or any(not math.isfinite(b) for b in buckets) or any(a >= b for a, b in zip(buckets, buckets[1:])):
        raise Error("PIT-400", f"metric {q}: buckets must be finite and increasing, at most 32")
    return buckets


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
        self.metrics = []  # MockMetric, by id
        self.metric_ids = {}  # exported name -> (id, help, kind, labels, buckets in effect)
        self.metric_names = {}  # every name declared -> id
        self.series = {}  # (id, label values) -> value, or [count, sum] for a histogram
        self.max_metric_series = 1000

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

    def metric_declare(self, name, help, kind, labels, buckets):
        labels, buckets = tuple(labels), tuple(float(b) for b in buckets)
        effective = _check_spec(name, help, kind, labels, buckets)
        exported = _exported(name, kind)
        known = self.metric_ids.get(exported)
        if known is not None:
            if known[1:] != (help, kind, labels, effective):
                raise Error(
                    "PIT-400",
                    f"metric {_debug_str(name)} is already declared with other labels, kind, help or buckets "
                    f"(by server type {_SERVER_TYPE}); a changed metric needs a new name, or a new version of the one server type declaring it",
                )
            self.metric_names[name] = known[0]
            return known[0]
        if len(self.metrics) >= 128:
            raise Error("PIT-500", f"metric limit reached: server type {_SERVER_TYPE} declares at most 128 metrics")
        id = len(self.metrics)
        self.metrics.append(MockMetric(id, name, help, kind, labels, buckets))
        self.metric_ids[exported] = (id, help, kind, labels, effective)
        self.metric_names[name] = id
        return id

    def _series(self, id, op, labels, value):
        if not 0 <= id < len(self.metrics):
            raise Error("PIT-400", f"no metric with id {id}")
        m = self.metrics[id]
        q = _debug_str(m.name)
        if op not in _OPS[m.kind]:
            raise Error("PIT-400", f"metric {q} is a {m.kind}: record it with {' or '.join(_OPS[m.kind])}")
        labels = tuple(labels)
        if len(labels) != len(m.labels):
            raise Error("PIT-400", f"metric {q} has labels [{', '.join(m.labels)}]: {len(labels)} values given")
        for v in labels:
            n = len(v.encode("utf-8"))
            if n > 128:
                raise Error("PIT-400", f"metric {q}: a label value of {n} bytes is over 128")
        if not math.isfinite(value):
            raise Error("PIT-400", f"metric {q}: the value must be finite")
        if m.kind == "counter" and value < 0:
            raise Error("PIT-400", f"metric {q}: a counter only goes up (add {_rust_f64(value)})")
        key = (id, labels)
        if key not in self.series:
            if len(self.series) >= self.max_metric_series:
                raise Error(
                    "PIT-500",
                    f"metric series limit reached: server type {_SERVER_TYPE} records at most "
                    f"{self.max_metric_series} series (servers.{_SERVER_TYPE}.max_metric_series)",
                )
            self.series[key] = [0, 0.0] if m.kind == "histogram" else 0.0
        return key

    def metric_add(self, id, labels, value):
        key = self._series(id, "add", labels, value)
        self.series[key] += value

    def metric_set(self, id, labels, value):
        key = self._series(id, "set", labels, value)
        self.series[key] = value

    def metric_observe(self, id, labels, value):
        key = self._series(id, "observe", labels, value)
        self.series[key][0] += 1
        self.series[key][1] += value


_mock = _MockHost()


def install():
    """Routes host calls to the in-memory host (done when this module is imported)."""
    _host.install(_mock)


def reset():
    """Clears the in-memory host: users, groups, the RPC responder, timers, logs and metrics
    (metrics declare themselves again on their next use, or at `server.init()`)."""
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


def set_max_metric_series(n):
    """Caps the series recorded over all metrics, as `servers.<type>.max_metric_series` does
    (1000, the host's default, until changed): past it, recording a new series raises
    `PIT-500`."""
    _mock.max_metric_series = n


def declared_metrics():
    """The metrics declared so far (`MockMetric`s), in the order they were first declared."""
    return [dataclasses.replace(m) for m in _mock.metrics]


def _values(name, labels):
    id = _mock.metric_names.get(name)
    if id is None:
        return None, None
    m = _mock.metrics[id]
    if isinstance(labels, str):
        labels = (labels,)
    elif isinstance(labels, dict):
        labels = tuple(labels.get(n) for n in m.labels)
    return m, _mock.series.get((id, tuple(labels)))


def metric_value(name, labels=()):
    """The value of a counter's or gauge's series (`labels`: its label values, in order, or a
    dict by label name), a float; None if nothing was recorded there."""
    m, value = _values(name, labels)
    if m is not None and m.kind == "histogram":
        raise TypeError(f"metric {name!r} is a histogram: read it with testing.histogram")
    return value


def histogram(name, labels=()):
    """A histogram's series: `(count, sum)` of its observations; None if there were none."""
    m, value = _values(name, labels)
    if m is not None and m.kind != "histogram":
        raise TypeError(f"metric {name!r} is a {m.kind}: read it with testing.metric_value")
    return None if value is None else (value[0], value[1])


if not _host.IN_COMPONENT:
    install()
