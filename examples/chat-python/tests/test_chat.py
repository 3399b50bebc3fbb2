"""The chat room's logic against the SDK's in-memory host, mirroring the Rust guest's unit tests
(examples/chat/guest/src/lib.rs) byte for byte:

    python3 -m unittest discover -s examples/chat-python/tests
"""

import os
import sys
import unittest

# No bytecode caches beside the sources: kiwano.toml's `sources` would see them as changes.
sys.dont_write_bytecode = True
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "guest"))
sys.path.insert(0, os.path.join(here, "..", "..", "..", "guest-sdk", "python"))

import kiwano  # noqa: E402
from kiwano import testing  # noqa: E402
from kiwano.testing import MockSession  # noqa: E402

import app  # noqa: E402


class Chat(unittest.TestCase):
    def setUp(self):
        testing.reset()
        self.s = app.server
        self.s.init(kiwano.InitInfo("chat", "chat-1", 0, {}))

    def test_describe(self):
        d = self.s.describe()
        self.assertEqual(d.handlers, [("room.join", "request"), ("room.message", "notify")])
        self.assertEqual((d.remotes, d.affinity), ([], None))

    def test_join_then_message(self):
        s = self.s
        a = MockSession(1)
        self.assertEqual(s.handle(a, "room.join", b"{}"), b'{"code":0,"result":"success"}')
        self.assertEqual(a.pushes, [("onMembers", b'{"members":[]}')])
        b = MockSession(2)
        s.handle(b, "room.join", b"{}")
        self.assertEqual(b.pushes[0], ("onMembers", b'{"members":["1"]}'))
        self.assertEqual(a.pushes[1], ("onNewUser", b'{"content":"New user: 2"}'))
        c = MockSession(3)
        s.handle(c, "room.join", b"")
        self.assertEqual(c.pushes[0], ("onMembers", b'{"members":["1","2"]}'))
        self.assertEqual(s.handle(b, "room.message", b'{"name":"bob","content":"hello all"}'), b"")
        msg = ("onMessage", b'{"name":"bob","content":"hello all"}')
        self.assertEqual((a.pushes[-1], b.pushes[-1], c.pushes[-1]), (msg, msg, msg))
        # The message is written back as the Rust struct is: its two fields, in order.
        s.handle(b, "room.message", '{"content":"ça va","extra":1,"name":"bob"}'.encode())
        self.assertEqual(a.pushes[-1], ("onMessage", '{"name":"bob","content":"ça va"}'.encode()))
        s.handle(b, "room.message", b'["bob","as a sequence"]')
        self.assertEqual(a.pushes[-1], ("onMessage", b'{"name":"bob","content":"as a sequence"}'))
        # A second join fails to bind: RH-000 with {"failed":"bind"}.
        with self.assertRaises(kiwano.Error) as cm:
            s.handle(a, "room.join", b"{}")
        self.assertEqual(cm.exception, kiwano.Error("RH-000", 'session is already bound to an uid ("1")', failed="bind"))
        s.session_closed(a)
        self.assertEqual(testing.group_members("room"), ["2", "3"])
        d = MockSession(4)
        s.handle(d, "room.join", b"{}")
        self.assertEqual(d.pushes[0], ("onMembers", b'{"members":["2","3"]}'))
        self.assertEqual(b.pushes[-1], ("onNewUser", b'{"content":"New user: 4"}'))

    def test_refused_bodies(self):
        s, a = self.s, MockSession(1)
        s.handle(a, "room.join", b"{}")
        with self.assertRaises(kiwano.Error) as cm:
            s.handle(MockSession(2), "room.join", b"{")
        self.assertEqual(cm.exception, kiwano.Error("PIT-400", "invalid JSON: EOF while parsing an object at line 1 column 1"))
        for body in [b'{"name":"bob"}', b'{"name":1,"content":"x"}', b"null", b"", b'["a"]']:
            with self.assertRaises(kiwano.Error, msg=body) as cm:
                s.handle(a, "room.message", body)
            self.assertEqual(cm.exception.code, "PIT-400", body)
        self.assertEqual(len(a.pushes), 1, "nothing broadcast")

    def test_a_displaced_session_leaves_the_room_to_the_newer_one(self):
        s = self.s
        old = MockSession(1)
        s.handle(old, "room.join", b"{}")
        # The same uid bound by a newer session (in the chat the uid is the session id, so this
        # is what a game binding a player id would see after a reconnect).
        newer = MockSession(2)
        testing.bind_user("1", newer)
        self.assertTrue(old.displaced)
        s.session_closed(old)
        self.assertEqual(testing.group_members("room"), ["1"], "still in the room")

    def test_a_session_that_never_joined_closes_quietly(self):
        self.s.session_closed(MockSession(7))
        self.assertEqual(testing.logs(), [])


if __name__ == "__main__":
    unittest.main()
