"""Write Kiwano server types in Python.

A server type is a set of handler functions registered on a `Server` by route, exported to the
host with one line; componentize-py builds the module into a WebAssembly component that
`kiwano run` serves::

    import kiwano
    from kiwano import groups

    server = kiwano.Server()

    @server.request("room.join")
    def join(ctx, body):
        ctx.bind(body["name"])
        members = groups.members("room")
        groups.add("room", body["name"])
        return {"code": 0, "members": members}

    @server.notify("room.say")
    def say(ctx, body):
        groups.broadcast("room", "onMessage", {"from": ctx.uid, "text": body["text"]})

    @server.on_init
    def init(info):
        groups.create("room")

    Guest = server.guest()

Host functions are plain calls: `Context` for the session of the call, `users` (push and kick
by uid), `groups`, `rpc`, `timers`, `log`, and `metrics` (counters, gauges and histograms).
Failures are `kiwano.Error` (code, message, metadata); one raised by a handler reaches the
client unchanged. `kiwano.testing` runs the same handlers under plain `python3`, against an
in-memory host.
"""

from . import groups, log, metrics, rpc, timers, users
from ._context import Context
from ._error import Error
from ._json import dumps as json_dumps
from ._json import loads as json_loads
from ._server import Description, InitInfo, Server

__all__ = [
    "Server",
    "Context",
    "Error",
    "InitInfo",
    "Description",
    "users",
    "groups",
    "rpc",
    "timers",
    "log",
    "metrics",
    "json_dumps",
    "json_loads",
]

__version__ = "0.1.0"
