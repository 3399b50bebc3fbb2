"""Pitaya's chat demo (`examples/demo/chat` in Pitaya) in Python: the room of examples/chat,
byte for byte the same on the wire as its Rust guest (examples/chat/guest/src/lib.rs).

- `room.join` (request): binds the session id as uid, pushes `onMembers` `{"members":[...]}`
  (the members before the joiner) to the joiner, broadcasts `onNewUser`
  `{"content":"New user: <uid>"}` to the group `room`, adds the joiner and answers
  `{"code":0,"result":"success"}`; a failed bind answers `RH-000` with `{"failed":"bind"}`.
- `room.message` (notify `{"name","content"}`): broadcast as `onMessage` to the group.
- A member leaves the group when its session closes.

Build: `../../guest-sdk/python/build.sh guest app <out.wasm>` from examples/chat-python
(`kiwano run examples/chat-python` does it for you).
"""

import kiwano
from kiwano import groups

ROOM = "room"

server = kiwano.Server()


@server.on_init
def init(info):
    # Every instance creates it; the first one wins.
    try:
        groups.create(ROOM)
    except kiwano.Error:
        pass


@server.request("room.join")
def join(ctx, body):
    uid = str(ctx.session_id)
    try:
        ctx.bind(uid)
    except kiwano.Error as e:
        raise kiwano.Error("RH-000", e.msg, failed="bind") from None
    ctx.push("onMembers", {"members": groups.members(ROOM)})
    groups.broadcast(ROOM, "onNewUser", {"content": f"New user: {uid}"})
    groups.add(ROOM, uid)
    return {"code": 0, "result": "success"}


def user_message(body):
    """`{"name", "content"}`, both strings, as the Rust guest's `UserMessage` reads it: other
    fields are dropped and the two are written back in this order. (serde also reads a struct
    from a JSON array of its fields in order.)"""
    if isinstance(body, list) and len(body) == 2:
        body = {"name": body[0], "content": body[1]}
    if not isinstance(body, dict):
        raise kiwano.Error.bad_request("invalid JSON: expected struct UserMessage")
    for field in ("name", "content"):
        if field not in body:
            raise kiwano.Error.bad_request(f"invalid JSON: missing field `{field}`")
        if not isinstance(body[field], str):
            raise kiwano.Error.bad_request(f"invalid JSON: invalid type for `{field}`, expected a string")
    return {"name": body["name"], "content": body["content"]}


@server.notify("room.message")
def message(ctx, body):
    groups.broadcast(ROOM, "onMessage", user_message(body))


@server.on_session_close
def leave(ctx):
    # Not if a newer session holds the uid now: it joined on its own.
    uid = ctx.leaving_uid
    if uid is not None:
        try:
            groups.remove(ROOM, uid)
        except kiwano.Error:
            pass  # not a member if it never joined


Guest = server.guest()
