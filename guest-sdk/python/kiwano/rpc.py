"""Calls to remotes of other servers (`server-type.service.method`).

A call blocks this instance until the reply or the timeout (`PIT-408`). Failures raise
`kiwano.Error`: `PIT-500 no servers available of this type`, `PIT-404`, `PIT-408`, or the
remote's own error.
"""

from . import _host, _json
from ._context import _encode
from ._error import Error

__all__ = ["call", "call_raw", "call_to", "call_to_raw"]

_U32_MAX = (1 << 32) - 1


def _timeout(timeout):
    return None if timeout is None else _host.ms(timeout, "timeout", _U32_MAX)


def _decode(body):
    try:
        return _json.loads(body)
    except _json.JSONError as e:
        raise Error("PIT-400", f"invalid JSON: {e}") from None


def call_raw(route, body=b"", timeout=None):
    """Calls `route` on a server of its type with bytes; returns the answer's bytes. `timeout`
    in seconds (or a timedelta); the host's default (5 s) when None."""
    return bytes(_host.current().rpc(None, route, _host.as_bytes(body), _timeout(timeout)))


def call_to_raw(server_id, route, body=b"", timeout=None):
    """Calls `route` on the server `server_id` (which may be this one) with bytes."""
    return bytes(_host.current().rpc(server_id, route, _host.as_bytes(body), _timeout(timeout)))


def call(route, value=None, timeout=None):
    """Calls a JSON remote on a server of its type; returns the decoded answer."""
    return _decode(call_raw(route, _encode(value), timeout))


def call_to(server_id, route, value=None, timeout=None):
    """Calls a JSON remote on the server `server_id`; returns the decoded answer."""
    return _decode(call_to_raw(server_id, route, _encode(value), timeout))
