"""A hostile Python guest (tests/tests/hostile.rs), written with the Kiwano Python SDK: each
route misbehaves in one way; `hostile.echo` behaves."""

import kiwano
from kiwano import users

server = kiwano.Server()


@server.request("hostile.echo", raw=True)
def echo(ctx, body):
    return body


@server.request("hostile.loop")
def spin(ctx, body):
    while True:
        pass


@server.request("hostile.bomb")
def bomb(ctx, body):
    hoard = []
    while True:
        hoard.append(bytearray(8 << 20))


@server.request("hostile.recurse")
def recurse(ctx, body):
    def down(n):
        return down(n + 1) + 1

    return down(0)


@server.request("hostile.flood")
def flood(ctx, body):
    for i in range(1_000_000):
        users.push("onFlood", {"i": i}, [ctx.uid or "nobody"])
    return {"done": True}


@server.request("hostile.huge")
def huge(ctx, body):
    return "x" * (4 << 20)


Guest = server.guest()
