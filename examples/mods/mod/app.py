"""examples/mods, the `mod` server type: a third-party mod, in Python, scoring a move. Its
author's bugs are on purpose, to show what the host does about them:

- any move scores its length;
- `"loop"` never returns (the host ends the call at the mod's deadline);
- `"hoard"` asks for memory without end (the host caps the instance's memory);
- `"crash"` raises (the instance is rebuilt);
- `"spam"` tries to push to players (a mod may not push: its limit is 0).
"""

import kiwano
from kiwano import users

server = kiwano.Server()


@server.remote("mod.score")
def score(body):
    move = body["move"]
    if move == "loop":
        while True:
            pass
    if move == "hoard":
        hoard = []
        while True:
            hoard.append(bytearray(4 << 20))
    if move == "crash":
        raise RuntimeError("the mod crashed")
    if move == "spam":
        users.push("onSpam", {"buy": "now"}, ["everyone"])
    return {"score": len(move)}


Guest = server.guest()
