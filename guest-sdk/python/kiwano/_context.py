"""`kiwano.Context`: the session a call is made for."""

from . import _host, _json
from ._error import Error

__all__ = ["Context"]


def _encode(value):
    try:
        return _json.dumps(value)
    except (TypeError, ValueError) as e:
        raise Error("PIT-500", str(e)) from None


def _decode_or(text, default):
    if text is None:
        return default
    try:
        return _json.loads(text)
    except _json.JSONError:
        return default


class Context:
    """The session of the message being handled: its id, uid, data, and its client.

    Valid only during the call it was given to (the host's call context is borrowed). Values of
    the session data are JSON: `set` takes any value `json` can write, `get` returns it decoded.

    In tests, `Context(session)` wraps a `kiwano.testing.MockSession`.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw):
        # A MockSession hands over its call-context stand-in.
        adapter = getattr(raw, "_call_context", None)
        self._raw = adapter() if adapter is not None else raw

    @property
    def session_id(self):
        """The session id (an int, unique within the server process)."""
        return self._raw.session_id()

    @property
    def uid(self):
        """The uid bound to the session, or None."""
        return self._raw.uid()

    @property
    def displaced(self):
        """Whether a newer session has bound this session's uid since this one did (the player
        reconnected, or logged in on another device). In `on_session_close`, a displaced session
        must not undo what the newer one did; `leaving_uid` says it in one go. Always False on a
        backend."""
        return self._raw.displaced()

    @property
    def leaving_uid(self):
        """The uid a closing session leaves behind: its uid, unless it has none or a newer session
        has taken it over (`displaced`). What an `on_session_close` hook cleans up after."""
        uid = self._raw.uid()
        if uid is None or self._raw.displaced():
            return None
        return uid

    @property
    def remote_address(self):
        """The client's address, `ip:port` (empty on a backend)."""
        return self._raw.remote_address()

    @property
    def handshake(self):
        """The client's handshake, decoded: `{"sys": {..}, "user": {..}}`."""
        return _decode_or(self._raw.handshake(), None)

    def bind(self, uid):
        """Binds a uid to the session; another session bound to it is kicked. Raises
        `kiwano.Error` `PIT-400` for an empty uid or an already bound session."""
        _host.call(self._raw.bind, uid)

    def get(self, key, default=None):
        """One session-data value, decoded from JSON; `default` if absent."""
        return _decode_or(self._raw.get(key), default)

    def get_raw(self, key):
        """One session-data value as JSON text, or None."""
        return self._raw.get(key)

    def set(self, key, value):
        """Sets one session-data value (any JSON-serializable value)."""
        _host.call(self._raw.set, key, _encode(value).decode("utf-8"))

    def set_raw(self, key, json_text):
        """Sets one session-data value from JSON text."""
        _host.call(self._raw.set, key, json_text)

    def data(self):
        """The whole session data, as a dict (a copy: change it with `set` or `set_data`)."""
        data = _decode_or(self._raw.data(), {})
        return data if isinstance(data, dict) else {}

    def set_data(self, data):
        """Replaces the whole session data with the dict `data`."""
        if not isinstance(data, dict):
            raise TypeError(f"session data must be a dict, not {type(data).__name__}")
        _host.call(self._raw.set_data, _encode(data).decode("utf-8"))

    def push(self, route, value):
        """Pushes `value`, as JSON, on `route` to this session. Raises `PIT-499` when the session is
        closed."""
        _host.call(self._raw.push, route, _encode(value))

    def push_raw(self, route, body):
        """Pushes bytes on `route` to this session."""
        _host.call(self._raw.push, route, _host.as_bytes(body))

    def kick(self):
        """Kicks this session: its client gets a kick packet and is disconnected."""
        _host.call(self._raw.kick)

    def pin(self, server_type, server_id):
        """Pins the session to server `server_id` of `server_type`: its messages for that type go
        there. Frontends only (`PIT-400` elsewhere)."""
        _host.call(self._raw.pin, server_type, server_id)

    def __repr__(self):
        return f"<kiwano.Context session {self.session_id}>"
