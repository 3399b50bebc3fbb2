"""`kiwano.Server`: a server type's handlers, remotes and lifecycle hooks."""

import dataclasses

from . import _host, _json, metrics
from ._context import Context
from ._error import Error

__all__ = ["Server", "InitInfo", "Description"]

REQUEST = "request"
NOTIFY = "notify"


@dataclasses.dataclass
class InitInfo:
    """Facts about the instance being initialised, given to the `on_init` hook."""

    #: The server type this component serves, e.g. `room`.
    server_type: str = "test"
    #: This server's id.
    server_id: str = "test-1"
    #: The index of this instance in the server type's pool, from 0.
    instance: int = 0
    #: The server type's `config` table from `kiwano.toml`, decoded.
    config: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Description:
    """What a server serves, as the host reads it when it loads the component."""

    #: `(route, "request" | "notify")`, sorted by route.
    handlers: list
    #: Remote routes, sorted.
    remotes: list
    #: `"session"`, `"uid"`, `"none"`, `"data:<field>"`, or None (the configuration decides).
    affinity: object = None


def _decode(body):
    """A JSON body as the Rust SDK reads it: empty reads as null; invalid JSON is `PIT-400`."""
    if not body:
        return None
    try:
        return _json.loads(body)
    except _json.JSONError as e:
        raise Error("PIT-400", f"invalid JSON: {e}") from None


def _encode(value):
    try:
        return _json.dumps(value)
    except (TypeError, ValueError) as e:
        raise Error("PIT-500", f"cannot encode the response: {e}") from None


def _check_affinity(affinity):
    if affinity is None or affinity in ("session", "uid", "none"):
        return affinity
    if isinstance(affinity, str) and affinity.startswith("data:") and len(affinity) > len("data:"):
        return affinity
    raise ValueError(f'affinity must be "session", "uid", "none" or "data:<field>", not {affinity!r}')


def _route(route, what):
    if not isinstance(route, str):
        raise TypeError(f'give the route: @server.{what}("service.method")')
    if route.count(".") != 1 or route.startswith(".") or route.endswith("."):
        raise ValueError(f"a route is service.method (without the server type), not {route!r}")
    return route


class Server:
    """A server type: handlers (client routes), remotes (server-to-server routes) and hooks.

    ::

        server = kiwano.Server()

        @server.request("room.join")
        def join(ctx, body):
            ctx.bind(body["name"])
            return {"code": 0}

        Guest = server.guest()   # what componentize-py exports

    Handlers take and return JSON as Python values (dict, list, str, int, float, bool, None,
    dataclasses); `raw=True` passes the body as bytes and expects bytes back.
    """

    def __init__(self, affinity=None):
        self._handlers = {}
        self._remotes = {}
        self._affinity = _check_affinity(affinity)
        self._init = None
        self._shutdown = None
        self._session_closed = None
        self._timer = None

    # Registration.

    def _add(self, table, route, entry):
        if route in self._handlers or route in self._remotes:
            raise ValueError(f"route {route!r} is registered twice")
        table[route] = entry

    def request(self, route, *, raw=False):
        """Registers a request handler `f(ctx, body) -> answer` on `route` (`service.method`)."""
        _route(route, "request")

        def register(f):
            if raw:
                def run(ctx, body):
                    return _host.as_bytes(f(ctx, body), "a raw handler's answer")
            else:
                def run(ctx, body):
                    return _encode(f(ctx, _decode(body)))
            self._add(self._handlers, route, (REQUEST, run))
            return f

        return register

    def notify(self, route, *, raw=False):
        """Registers a notify handler `f(ctx, body)` on `route`: nothing is sent back (an error is
        only logged by the host)."""
        _route(route, "notify")

        def register(f):
            if raw:
                def run(ctx, body):
                    f(ctx, body)
                    return b""
            else:
                def run(ctx, body):
                    f(ctx, _decode(body))
                    return b""
            self._add(self._handlers, route, (NOTIFY, run))
            return f

        return register

    def remote(self, route, *, raw=False):
        """Registers a remote `f(body) -> answer` on `route`, called by other servers with
        `rpc.call("<type>.service.method", ...)`."""
        _route(route, "remote")

        def register(f):
            if raw:
                def run(body):
                    return _host.as_bytes(f(body), "a raw remote's answer")
            else:
                def run(body):
                    return _encode(f(_decode(body)))
            self._add(self._remotes, route, run)
            return f

        return register

    def affinity(self, affinity):
        """Which instance runs a call: `"session"` (the default), `"uid"`, `"none"` (any), or
        `"data:<field>"` (a field of the session data, e.g. `"data:room"`). The server's
        configuration may override it. Returns the server."""
        self._affinity = _check_affinity(affinity)
        return self

    def on_init(self, f):
        """Hook `f(info: InitInfo)` run on every new instance before it serves; raising
        `kiwano.Error` stops the server type from starting."""
        self._init = f
        return f

    def on_shutdown(self, f):
        """Hook `f()` run on every instance at shutdown."""
        self._shutdown = f
        return f

    def on_session_close(self, f):
        """Hook `f(ctx)` run when a session of this frontend type closes, after its last message.
        Use `ctx.leaving_uid` to clean up after it."""
        self._session_closed = f
        return f

    def on_timer(self, f):
        """Hook `f(id, payload: bytes)` run when a timer set by this instance fires."""
        self._timer = f
        return f

    # Dispatch (what the host calls; also usable from tests).

    def describe(self):
        """The handlers, remotes and affinity the host reads at load."""
        return Description(
            handlers=[(route, self._handlers[route][0]) for route in sorted(self._handlers)],
            remotes=sorted(self._remotes),
            affinity=self._affinity,
        )

    def init(self, info=None):
        """Declares every metric defined so far (`kiwano.metrics`; the host's error if it refuses
        one), then runs the init hook (with a test `InitInfo` when `info` is None)."""
        metrics._declare_all()
        if self._init is not None:
            self._init(info if info is not None else InitInfo())

    def shutdown(self):
        """Runs the shutdown hook."""
        if self._shutdown is not None:
            self._hook("on_shutdown", self._shutdown)

    def handle(self, ctx, route, body=b""):
        """Dispatches a client message; returns the answer's bytes (empty for a notify). Raises
        `kiwano.Error`, `PIT-404` for an unknown route. `ctx` is a `Context` (or, in tests, a
        `MockSession`)."""
        entry = self._handlers.get(route)
        if entry is None:
            raise Error("PIT-404", f"no handler for {route}")
        if not isinstance(ctx, Context):
            ctx = Context(ctx)
        return entry[1](ctx, body)

    def remote_call(self, route, body=b""):
        """Dispatches a remote call; raises `PIT-404 route not found` for an unknown route."""
        run = self._remotes.get(route)
        if run is None:
            raise Error("PIT-404", "route not found", route=route)
        return run(body)

    def session_closed(self, ctx):
        """Runs the session-close hook for `ctx` (a `Context`, or in tests a `MockSession`)."""
        if self._session_closed is not None:
            if not isinstance(ctx, Context):
                ctx = Context(ctx)
            self._hook("on_session_close", self._session_closed, ctx)

    def timer(self, id, payload=b""):
        """Runs the timer hook."""
        if self._timer is not None:
            self._hook("on_timer", self._timer, id, payload)

    def _hook(self, name, f, *args):
        # These hooks answer nobody: a kiwano.Error there (say groups.remove of a uid that never
        # joined) is logged rather than trapping the instance.
        try:
            f(*args)
        except Error as e:
            from . import log

            log.warn(f"{name}: {e.code}: {e.msg}", **e.metadata)

    # Test helpers.

    def call(self, session, route, value=None):
        """Test helper: sends `value` as JSON on `route` for `session` (a `MockSession` or a
        `Context`) and returns the decoded answer (None for a notify)."""
        out = self.handle(session, route, _json.dumps(value))
        return _decode(out)

    def call_raw(self, session, route, body=b""):
        """Test helper: sends bytes on `route` for `session`; returns the answer's bytes."""
        return self.handle(session, route, _host.as_bytes(body))

    def call_remote(self, route, value=None):
        """Test helper: calls the remote `route` with `value` as JSON; returns the decoded answer."""
        return _decode(self.remote_call(route, _json.dumps(value)))

    # The component's export.

    def guest(self):
        """The class componentize-py exports: write `Guest = server.guest()` in the app module."""
        return _guest_class(self)


def _wit_affinity(affinity):
    t = _host.wit_types
    if affinity is None:
        return None
    if affinity == "session":
        return t.Affinity_Session()
    if affinity == "uid":
        return t.Affinity_Uid()
    if affinity == "none":
        return t.Affinity_None_()
    return t.Affinity_DataField(affinity[len("data:"):])


def _config(text):
    try:
        config = _json.loads(text)
    except _json.JSONError:
        return {}
    return config if isinstance(config, dict) else {}


def _guest_class(server):
    if not _host.IN_COMPONENT:

        class Guest:
            """Outside a component there is nothing to export; tests call the server directly."""

            __kiwano_server__ = server

        return Guest

    t = _host.wit_types
    Err = _host._Err
    wit_error = _host.to_wit_error

    class Guest(_host.wit_exports.Guest):
        __kiwano_server__ = server

        def describe(self):
            d = server.describe()
            kinds = {REQUEST: t.HandlerKind.REQUEST, NOTIFY: t.HandlerKind.NOTIFY}
            handlers = [t.Handler(route, kinds[kind]) for route, kind in d.handlers]
            return t.Description(handlers, list(d.remotes), _wit_affinity(d.affinity))

        def init(self, info):
            try:
                server.init(InitInfo(info.server_type, info.server_id, info.instance, _config(info.config)))
            except Error as e:
                raise Err(wit_error(e)) from None

        def shutdown(self):
            server.shutdown()

        def handle(self, ctx, route, body):
            try:
                return server.handle(Context(ctx), route, body)
            except Error as e:
                raise Err(wit_error(e)) from None

        def remote(self, route, body):
            try:
                return server.remote_call(route, body)
            except Error as e:
                raise Err(wit_error(e)) from None

        def on_session_close(self, ctx):
            server.session_closed(Context(ctx))

        def on_timer(self, id, payload):
            server.timer(id, payload)

    return Guest
