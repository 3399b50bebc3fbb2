"""The conformance server in Python (tests/conformance/README.md): the routes and remotes of its
tables, written with the Kiwano Python SDK, answering byte for byte as the Rust build does.

Build: `../../../guest-sdk/python/build.sh app app <out.wasm>` from tests/conformance/python
(`kiwano run tests/conformance/python` does it for you).
"""

import datetime

import kiwano
from kiwano import groups, metrics, rpc, timers, users

LOBBY = "lobby"

HITS = metrics.counter("conf_hits", "Hits by color", labels=("color",))
LEVEL = metrics.gauge("conf_level", "Level")
SIZE = metrics.histogram("conf_size", "Sizes", labels=("kind",), buckets=(1, 10, 100))

server = kiwano.Server()


def bound_uid(ctx):
    """The session's uid; `CF-002` when it has none."""
    uid = ctx.uid
    if uid is None:
        raise kiwano.Error("CF-002", "bind first")
    return uid


@server.request("conf.echo")
def echo(ctx, body):
    return {"echo": body}


@server.request("conf.fail")
def fail(ctx, body):
    raise kiwano.Error("CF-001", "conformance failure", route="conf.fail", kind="custom")


@server.request("conf.bind")
def bind(ctx, body):
    ctx.bind(body["uid"])
    return {"uid": body["uid"]}


@server.request("conf.set")
def set_data(ctx, body):
    ctx.set(body["key"], body["value"])
    return {"data": ctx.data()}


@server.request("conf.get")
def get(ctx, body):
    return {"key": body["key"], "value": ctx.get(body["key"])}


@server.request("conf.push")
def push(ctx, body):
    ctx.push(body["route"], body["body"])
    return {"pushed": body["route"]}


@server.notify("conf.note")
def note(ctx, body):
    ctx.push("onNote", {"text": body["text"]})


@server.request("conf.kick")
def kick(ctx, body):
    ctx.kick()
    return {"kicked": True}


@server.request("conf.join")
def join(ctx, body):
    uid = bound_uid(ctx)
    group = body["group"]
    try:
        groups.create(group)
    except kiwano.Error as e:
        if e.msg != "group already exists":
            raise
    groups.add(group, uid)
    members = groups.members(group)
    groups.broadcast(group, "onJoin", {"uid": uid, "members": members})
    return {"group": group, "members": members, "count": groups.count(group)}


@server.request("conf.leave")
def leave(ctx, body):
    uid = bound_uid(ctx)
    group = body["group"]
    groups.remove(group, uid)
    return {"group": group, "contains": groups.contains(group, uid)}


@server.request("conf.members")
def members(ctx, body):
    return {"members": groups.members(body["group"])}


@server.request("conf.users")
def push_users(ctx, body):
    return {"missed": users.push(body["route"], body["body"], body["uids"])}


@server.request("conf.kickusers")
def kick_users(ctx, body):
    return {"missed": users.kick(body["uids"])}


@server.request("conf.rpc")
def call_add(ctx, body):
    return {"remote": rpc.call("confback.remote.add", {"a": body["a"], "b": body["b"]})}


@server.request("conf.rpcfail")
def call_fail(ctx, body):
    return rpc.call("confback.remote.fail", {})


@server.request("conf.timer")
def set_timer(ctx, body):
    uid = bound_uid(ctx)
    payload = kiwano.json_dumps({"uid": uid, "tag": body["tag"]})
    timers.after(datetime.timedelta(milliseconds=body["ms"]), payload)
    return {"timer": "set"}


@server.request("conf.handshake")
def handshake(ctx, body):
    hs = ctx.handshake
    return {"platform": hs["sys"]["platform"], "user": hs["user"]}


@server.request("conf.metric")
def record_metric(ctx, body):
    # The label values go as given: the host checks their number.
    m, labels, value = body["metric"], body["labels"], body["value"]
    if m == "hits":
        HITS.labels(*labels).inc(value)
    elif m == "level":
        LEVEL.labels(*labels).set(value)
    elif m == "size":
        SIZE.labels(*labels).observe(value)
    else:
        raise kiwano.Error.bad_request(f"no metric {m}")
    return {"recorded": m}


@server.remote("remote.add")
def add(body):
    return {"sum": body["a"] + body["b"]}


@server.remote("remote.fail")
def refuse(body):
    raise kiwano.Error("CF-003", "remote refused", side="remote")


@server.on_timer
def fired(id, payload):
    timer = kiwano.json_loads(payload)
    users.push("onTimer", {"tag": timer["tag"]}, [timer["uid"]])


@server.on_session_close
def closed(ctx):
    # A kiwano.Error here (say, no group `lobby`) is logged by the SDK.
    uid = ctx.leaving_uid
    if uid is not None and groups.contains(LOBBY, uid):
        groups.remove(LOBBY, uid)
        groups.broadcast(LOBBY, "onLeave", {"uid": uid})


Guest = server.guest()
