"""Kiwano's Python echo guest: the polyglot wire test's component (tests/tests/polyglot.rs).

Built with `guest-sdk/python/build.sh tests/polyglot/python-echo app out.wasm`.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log
from wit_world.imports.context import CallContext
from wit_world.imports.types import (
    Description,
    Error,
    Handler,
    HandlerKind,
    InitInfo,
    Level,
)

HANDLERS = [
    Handler("echo.echo", HandlerKind.REQUEST),
    Handler("echo.fail", HandlerKind.REQUEST),
    Handler("echo.who", HandlerKind.REQUEST),
    Handler("echo.note", HandlerKind.NOTIFY),
]


def not_found(route: str) -> Err[Error]:
    return Err(Error("PIT-404", f"unknown route {route}", []))


class Guest(exports.Guest):
    def describe(self) -> Description:
        # No preference (option none): the server's configuration decides.
        return Description(HANDLERS, [], None)

    def init(self, info: InitInfo) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def handle(self, ctx: CallContext, route: str, body: bytes) -> bytes:
        if route == "echo.echo":
            return body
        if route == "echo.fail":
            raise Err(
                Error(
                    "PY-001",
                    f"python refuses session {ctx.session_id()}",
                    [("lang", "python"), ("route", route)],
                )
            )
        if route == "echo.who":
            return ctx.remote_address().encode("utf-8")
        if route == "echo.note":
            return b""
        raise not_found(route)

    def remote(self, route: str, body: bytes) -> bytes:
        raise not_found(route)

    def on_session_close(self, ctx: CallContext) -> None:
        log.log(Level.DEBUG, "session closed", [("session", str(ctx.session_id()))])

    def on_timer(self, id: int, payload: bytes) -> None:
        return None
