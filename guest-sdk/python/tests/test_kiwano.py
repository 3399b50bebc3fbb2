"""Unit tests of the Python SDK, against its in-memory host.

    python3 -m unittest discover -s guest-sdk/python/tests
"""

import dataclasses
import datetime
import math
import os
import random
import sys
import unittest

# No bytecode caches beside the SDK: its directory is among a project's build `sources`.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import kiwano  # noqa: E402
from kiwano import Context, Error, groups, log, metrics, rpc, testing, timers, users  # noqa: E402
from kiwano import _host, _json  # noqa: E402
from kiwano.testing import MockSession  # noqa: E402


def same(a, b):
    """Equal values of the same JSON types (1 is not 1.0, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (a == b and math.copysign(1, a) == math.copysign(1, b)) or (a != a and b != b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


class JsonWriting(unittest.TestCase):
    """Bytes as serde_json::to_vec writes them."""

    def test_compact_utf8_and_ordered(self):
        self.assertEqual(_json.dumps({"name": "bob", "content": "hi"}), b'{"name":"bob","content":"hi"}')
        self.assertEqual(_json.dumps({"members": []}), b'{"members":[]}')
        self.assertEqual(_json.dumps({"t": "héllo ☃ 😀"}), '{"t":"héllo ☃ 😀"}'.encode("utf-8"))
        self.assertEqual(_json.dumps(None), b"null")
        self.assertEqual(_json.dumps([True, False, None, 1, -2, (3, 4)]), b"[true,false,null,1,-2,[3,4]]")
        self.assertEqual(_json.dumps({1: "a", True: "b"}), b'{"1":"b"}')  # 1 == True in a dict

    def test_escapes(self):
        self.assertEqual(_json.dumps('a"b\\c\n\t\r\b\f\x00\x1f\x7f/'), b'"a\\"b\\\\c\\n\\t\\r\\b\\f\\u0000\\u001f\x7f/"')

    def test_floats(self):
        cases = [
            (3.0, "3.0"),
            (3.1, "3.1"),
            (-1.5, "-1.5"),
            (0.5, "0.5"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-1.7976931348623157e308, "-1.7976931348623157e+308"),
            (2.220446049250313e-16, "2.220446049250313e-16"),
            (0.0001, "0.0001"),
            (0.00001, "0.00001"),
            (0.000015, "0.000015"),
            (-0.00001234, "-0.00001234"),
            (1e-6, "1e-6"),
            (1.5e-7, "1.5e-7"),
            (2.9802322387695312e-08, "2.9802322387695312e-8"),
            (1e-10, "1e-10"),
            (5e-324, "5e-324"),
            (6.62607015e-34, "6.62607015e-34"),
            (544431068535091.6, "544431068535091.6"),
            (-5942736479622170.0, "-5942736479622170.0"),
            (43210.1, "43210.1"),
        ]
        for f, want in cases:
            self.assertEqual(_json.format_float(f), want, repr(f))
            self.assertEqual(_json.dumps([f]), f"[{want}]".encode(), repr(f))
        self.assertEqual(_json.dumps([math.nan, math.inf, -math.inf]), b"[null,null,null]")
        # A string that looks like a float exponent takes the slow path, unchanged.
        self.assertEqual(_json.dumps({"id": "pipe-01", "x": 1e-7}), b'{"id":"pipe-01","x":1e-7}')
        self.assertEqual(_json.dumps({1e-5: 1}), b'{"0.00001":1}')

    def test_dataclasses_and_sets(self):
        @dataclasses.dataclass
        class Joined:
            code: int
            result: str

        self.assertEqual(_json.dumps(Joined(0, "success")), b'{"code":0,"result":"success"}')
        self.assertEqual(_json.dumps([Joined(1, "x")]), b'[{"code":1,"result":"x"}]')
        self.assertEqual(_json.dumps({"s": frozenset([1])}), b'{"s":[1]}')
        with self.assertRaises(TypeError):
            _json.dumps(object())


# serde_json's own test vectors (tests/test.rs of serde_json 1.0.154) for syntax errors.
SERDE_ERRORS = [
    ("n", "EOF while parsing a value at line 1 column 1"),
    ("nul", "EOF while parsing a value at line 1 column 3"),
    ("nulla", "trailing characters at line 1 column 5"),
    ("t", "EOF while parsing a value at line 1 column 1"),
    ("truz", "expected ident at line 1 column 4"),
    ("f", "EOF while parsing a value at line 1 column 1"),
    ("faz", "expected ident at line 1 column 3"),
    ("truea", "trailing characters at line 1 column 5"),
    ("falsea", "trailing characters at line 1 column 6"),
    ("+", "expected value at line 1 column 1"),
    (".", "expected value at line 1 column 1"),
    ("-", "EOF while parsing a value at line 1 column 1"),
    ("00", "invalid number at line 1 column 2"),
    ("0x80", "trailing characters at line 1 column 2"),
    ("\\0", "expected value at line 1 column 1"),
    (".0", "expected value at line 1 column 1"),
    ("0.", "EOF while parsing a value at line 1 column 2"),
    ("1.", "EOF while parsing a value at line 1 column 2"),
    ("1.a", "invalid number at line 1 column 3"),
    ("1.e1", "invalid number at line 1 column 3"),
    ("1e", "EOF while parsing a value at line 1 column 2"),
    ("1e+", "EOF while parsing a value at line 1 column 3"),
    ("1a", "trailing characters at line 1 column 2"),
    ("100e777777777777777777777777777", "number out of range at line 1 column 14"),
    ("-100e777777777777777777777777777", "number out of range at line 1 column 15"),
    ("1" + "0" * 309, "number out of range at line 1 column 310"),
    ("1" + "0" * 300 + ".0e9", "number out of range at line 1 column 305"),
    ("1" + "0" * 300 + "e9", "number out of range at line 1 column 303"),
    ('"', "EOF while parsing a string at line 1 column 1"),
    ('"lol', "EOF while parsing a string at line 1 column 4"),
    ('"lol"a', "trailing characters at line 1 column 6"),
    ('"\\uD83C\\uFFFF"', "lone leading surrogate in hex escape at line 1 column 13"),
    ('"\n"', "control character (\\u0000-\\u001F) found while parsing a string at line 2 column 0"),
    ('"\x1f"', "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 2"),
    ("[", "EOF while parsing a list at line 1 column 1"),
    ("[ ", "EOF while parsing a list at line 1 column 2"),
    ("[1", "EOF while parsing a list at line 1 column 2"),
    ("[1,", "EOF while parsing a value at line 1 column 3"),
    ("[1,]", "trailing comma at line 1 column 4"),
    ("[1 2]", "expected `,` or `]` at line 1 column 4"),
    ("[]a", "trailing characters at line 1 column 3"),
    ("{", "EOF while parsing an object at line 1 column 1"),
    ("{ ", "EOF while parsing an object at line 1 column 2"),
    ("{1", "key must be a string at line 1 column 2"),
    ('{ "a"', "EOF while parsing an object at line 1 column 5"),
    ('{"a"', "EOF while parsing an object at line 1 column 4"),
    ('{"a" ', "EOF while parsing an object at line 1 column 5"),
    ('{"a" 1', "expected `:` at line 1 column 6"),
    ('{"a":', "EOF while parsing a value at line 1 column 5"),
    ('{"a":1', "EOF while parsing an object at line 1 column 6"),
    ('{"a":1 1', "expected `,` or `}` at line 1 column 8"),
    ('{"a":1,', "EOF while parsing a value at line 1 column 7"),
    ("{}a", "trailing characters at line 1 column 3"),
    ("[" * 129, "recursion limit exceeded at line 1 column 128"),
]

SERDE_SLICE_ERRORS = [
    (b'"\x9f\x92\x96"', "invalid unicode code point at line 1 column 2"),
    (b'"\\n\x9f\x92\x96"', "invalid unicode code point at line 1 column 4"),
    (b'"\\u003', "EOF while parsing a string at line 1 column 6"),
    (b'"\\u\xfa030"', "invalid escape at line 1 column 7"),
    (b'"\\u0\xfa30"', "invalid escape at line 1 column 7"),
    (b'"\\u00\xfa0"', "invalid escape at line 1 column 7"),
    (b'"\\u003\xfa"', "invalid escape at line 1 column 7"),
]


class JsonReading(unittest.TestCase):
    """Values and errors as serde_json::from_slice::<Value> gives them."""

    def test_serde_error_vectors(self):
        for text, want in SERDE_ERRORS:
            with self.assertRaises(_json.JSONError, msg=text) as cm:
                _json.loads(text.encode("utf-8"))
            self.assertEqual(str(cm.exception), want, text)
        for data, want in SERDE_SLICE_ERRORS:
            with self.assertRaises(_json.JSONError, msg=data) as cm:
                _json.loads(data)
            self.assertEqual(str(cm.exception), want, data)

    def test_what_python_reads_and_serde_does_not(self):
        for text, want in [
            ("NaN", "expected value at line 1 column 1"),
            ("Infinity", "expected value at line 1 column 1"),
            ("-Infinity", "invalid number at line 1 column 2"),
            ('"\\ud800"', "unexpected end of hex escape at line 1 column 8"),
            ('"\\udc00"', "lone leading surrogate in hex escape at line 1 column 7"),
            ("\ufeff{}", "expected value at line 1 column 1"),
            ("", "EOF while parsing a value at line 1 column 0"),
            ("  \n ", "EOF while parsing a value at line 2 column 1"),
            ('{"a":1}\n{"b":2}', "trailing characters at line 2 column 1"),
        ]:
            with self.assertRaises(_json.JSONError, msg=text) as cm:
                _json.loads(text.encode("utf-8"))
            self.assertEqual(str(cm.exception), want, text)
        deepest = []
        for _ in range(126):
            deepest = [deepest]
        self.assertEqual(_json.loads(b"[" * 127 + b"]" * 127), deepest)

    def test_numbers(self):
        cases = [
            ("0", 0),
            ("-0", -0.0),
            ("-0.0", -0.0),
            ("3.00", 3.0),
            ("-2", -2),
            ("18446744073709551615", 18446744073709551615),
            ("18446744073709551616", 18446744073709551616.0),
            ("-9223372036854775808", -9223372036854775808),
            ("-9223372036854775809", -9223372036854775809.0),
            ("0.4e-001", 0.4e-1),
            ("0.00e-00", 0.0),
            ("3.5E-2147483647", 0.0),
            ("0.0100000000000000000001", 0.01),
            ("0.0000000000000000000000000000000000000000000000000123e50", 1.23),
            ("100e-777777777777777777777777777", 0.0),
            ("1010101010101010101010101010101010101010", 10101010101010101010e20),
            ("0.1010101010101010101010101010101010101010", 0.1010101010101010101),
            ("0e1000000000000000000000000000000000000000000000", 0.0),
            ("1" + "0" * 308, 1e308),
            ("2.638344616030823e-256", 2.638344616030823e-256),
            ("1e-400", 0.0),
            ("-1e-400", -0.0),
        ]
        for text, want in cases:
            self.assertTrue(same(_json.loads(text.encode()), want), f"{text}: {_json.loads(text.encode())!r} != {want!r}")

    def test_strings(self):
        self.assertEqual(_json.loads(b'"\\uD83C\\uDF95"'), "\U0001F395")
        self.assertEqual(_json.loads(b'"\\u12ab\\uAB12\\/\\b"'), "\u12ab\uab12/\b")
        self.assertEqual(_json.loads('{"é":"☃"}'.encode()), {"é": "☃"})

    def test_fast_path_agrees_with_the_serde_port(self):
        rng = random.Random(11)
        numbers = [
            "0", "-0", "7", "-7", "123456789012345678", "1234567890123456789", "12345678901234567890",
            "-9223372036854775808", "99999999999999999999", "1.5", "-0.25", "3.14159265358979",
            "0.1", "1e5", "1E+2", "-2.5e-3", "6.02214076e23", "1.7976931348623157e308", "5e-324",
            "0.30000000000000004", "123456.7890123456789", "9007199254740993", "9007199254740993.0",
            "1.00000000000000011102230246251565404236316680908203125", "4.35", "0.000001",
        ]
        strings = ['"plain"', '"h\\u00e9"', '"tab\\t"', '"☃"', '""', '"\\ud83d\\ude00"']

        def gen(depth):
            r = rng.random()
            if depth > 3 or r < 0.4:
                return rng.choice(numbers + strings + ["true", "false", "null"])
            if r < 0.7:
                return "[" + ",".join(gen(depth + 1) for _ in range(rng.randrange(4))) + "]"
            keys = rng.sample(["a", "b", "c", "d"], rng.randrange(4))
            return "{" + ",".join(f'"{k}" : {gen(depth + 1)}' for k in keys) + "}"

        for _ in range(400):
            text = gen(0)
            fast = _json.loads(text.encode("utf-8"))
            slow = _json._Parser(text.encode("utf-8")).document()
            self.assertTrue(same(fast, slow), text)
            # What it reads, it writes back as serde_json would write that Value (keys aside).
            self.assertTrue(same(_json.loads(_json.dumps(fast)), fast), text)


class Errors(unittest.TestCase):
    def test_metadata(self):
        e = Error("RH-000", "no", failed="bind", n=3)
        self.assertEqual((e.code, e.msg, e.metadata), ("RH-000", "no", {"failed": "bind", "n": "3"}))
        e = Error("RH-001", "full", {"room": "lobby", "code": "x", "msg": "y"})
        self.assertEqual(e.metadata, {"room": "lobby", "code": "x", "msg": "y"})
        self.assertEqual(Error("X", "y", [("a", 1)], b=2).metadata, {"a": "1", "b": "2"})
        self.assertEqual(Error.bad_request("nope"), Error("PIT-400", "nope"))
        self.assertEqual(str(Error("A", "b")), "A: b")
        self.assertIsInstance(Error("A", "b"), Exception)


def new_server():
    server = kiwano.Server()

    @server.request("room.join")
    def join(ctx, body):
        ctx.bind(body["name"])
        members = groups.members("room")
        groups.add("room", body["name"])
        log.info("joined", uid=body["name"])
        return {"code": 0, "members": members}

    @server.notify("room.say")
    def say(ctx, body):
        groups.broadcast("room", "onMessage", {"from": ctx.uid, "text": body["text"]})

    @server.request("room.echo", raw=True)
    def echo(ctx, body):
        return body

    @server.notify("room.raw", raw=True)
    def raw_note(ctx, body):
        ctx.push_raw("onRaw", body)

    @server.request("room.fail")
    def fail(ctx, body):
        raise Error("RH-002", "refused", reason="test")

    @server.request("room.body")
    def body_of(ctx, body):
        return {"body": body}

    @server.request("room.bad")
    def bad(ctx, body):
        return object()

    @server.remote("room.count")
    def count(body):
        return {"room": body["room"], "count": groups.count(body["room"])}

    @server.remote("room.ping", raw=True)
    def ping(body):
        return b"pong:" + body

    @server.on_init
    def init(info):
        if info.config.get("fail"):
            raise Error("RH-003", "bad config")
        groups.create("room")

    @server.on_session_close
    def leave(ctx):
        uid = ctx.leaving_uid
        if uid is not None:
            groups.remove("room", uid)

    return server


class ServerTests(unittest.TestCase):
    def setUp(self):
        testing.reset()
        self.server = new_server()
        self.server.init()

    def test_join_say_leave(self):
        s = self.server
        alice, bob = MockSession(1), MockSession(2)
        self.assertEqual(s.call(alice, "room.join", {"name": "alice"}), {"code": 0, "members": []})
        self.assertEqual(alice.uid, "alice")
        self.assertEqual(s.call(bob, "room.join", {"name": "bob"}), {"code": 0, "members": ["alice"]})
        self.assertIsNone(s.call(alice, "room.say", {"text": "hi"}))
        want = ("onMessage", b'{"from":"alice","text":"hi"}')
        self.assertEqual((alice.pushes, bob.pushes), ([want], [want]))
        self.assertEqual(bob.pushes_json(), [("onMessage", {"from": "alice", "text": "hi"})])
        self.assertEqual(testing.logs(), [("info", "joined"), ("info", "joined")])
        self.assertEqual(testing.log_records()[1], ("info", "joined", {"uid": "bob"}))
        # Alice reconnects: her new session binds her uid, then the old session's close arrives.
        again = MockSession(3)
        Context(again).bind("alice")
        self.assertTrue(alice.displaced)
        s.session_closed(alice)
        self.assertEqual(testing.group_members("room"), ["alice", "bob"], "still in the room")
        s.session_closed(again.context())
        self.assertEqual(testing.group_members("room"), ["bob"])
        # A session that never joined: groups.remove fails, and the hook's error is only logged.
        s.session_closed(MockSession(9))
        stranger = MockSession(10)
        Context(stranger).bind("nobody")
        s.session_closed(stranger)
        self.assertEqual(testing.logs()[-1], ("warn", "on_session_close: PIT-404: member not found in the group"))

    def test_wire_bytes(self):
        s = self.server
        a = MockSession(1)
        self.assertEqual(s.handle(a, "room.join", b'{"name":"a"}'), b'{"code":0,"members":[]}')
        self.assertEqual(s.handle(Context(a), "room.say", b'{"text":"x"}'), b"")
        self.assertEqual(s.call_raw(a, "room.echo", b"\x00\xff"), b"\x00\xff")
        self.assertEqual(s.call_raw(a, "room.raw", bytearray(b"zz")), b"")
        self.assertEqual(a.pushes[-1], ("onRaw", b"zz"))
        self.assertEqual(s.handle(a, "room.body", b""), b'{"body":null}')
        self.assertEqual(s.handle(a, "room.body", b' {"b":2.50,"a":[1e2]} '), b'{"body":{"b":2.5,"a":[100.0]}}')

    def test_errors(self):
        s, a = self.server, MockSession(1)
        with self.assertRaises(Error) as cm:
            s.handle(a, "room.nope", b"{}")
        self.assertEqual(cm.exception, Error("PIT-404", "no handler for room.nope"))
        with self.assertRaises(Error) as cm:
            s.handle(a, "room.body", b"{")
        self.assertEqual(cm.exception, Error("PIT-400", "invalid JSON: EOF while parsing an object at line 1 column 1"))
        with self.assertRaises(Error) as cm:
            s.handle(a, "room.body", b"hello")
        self.assertEqual(cm.exception, Error("PIT-400", "invalid JSON: expected value at line 1 column 1"))
        with self.assertRaises(Error) as cm:
            s.call(a, "room.fail")
        self.assertEqual(cm.exception, Error("RH-002", "refused", reason="test"))
        with self.assertRaises(Error) as cm:
            s.call(a, "room.bad")
        self.assertEqual(cm.exception.code, "PIT-500")
        self.assertTrue(cm.exception.msg.startswith("cannot encode the response: "), cm.exception.msg)
        s.call(a, "room.join", {"name": "a"})
        with self.assertRaises(Error) as cm:
            s.call(a, "room.join", {"name": "a"})
        self.assertEqual(cm.exception, Error("PIT-400", 'session is already bound to an uid ("a")'))
        with self.assertRaises(Error) as cm:
            s.remote_call("room.nope", b"")
        self.assertEqual(cm.exception, Error("PIT-404", "route not found", route="room.nope"))

    def test_remotes(self):
        s = self.server
        self.assertEqual(s.call_remote("room.count", {"room": "room"}), {"room": "room", "count": 0})
        self.assertEqual(s.remote_call("room.count", b'{"room":"room"}'), b'{"room":"room","count":0}')
        self.assertEqual(s.remote_call("room.ping", b"x"), b"pong:x")
        with self.assertRaises(Error) as cm:
            s.call_remote("room.count", {"room": "nope"})
        self.assertEqual(cm.exception, Error("PIT-404", "group not found"))

    def test_describe_and_registration(self):
        d = self.server.describe()
        self.assertEqual(
            d.handlers,
            [
                ("room.bad", "request"),
                ("room.body", "request"),
                ("room.echo", "request"),
                ("room.fail", "request"),
                ("room.join", "request"),
                ("room.raw", "notify"),
                ("room.say", "notify"),
            ],
        )
        self.assertEqual((d.remotes, d.affinity), (["room.count", "room.ping"], None))
        self.assertEqual(self.server.affinity("data:room").describe().affinity, "data:room")
        self.assertEqual(kiwano.Server(affinity="uid").describe().affinity, "uid")
        with self.assertRaises(ValueError):
            self.server.affinity("data:")
        with self.assertRaises(ValueError):
            kiwano.Server(affinity="sticky")
        with self.assertRaises(ValueError):
            self.server.request("room.join")(lambda ctx, body: None)
        with self.assertRaises(ValueError):
            self.server.remote("room.say")(lambda body: None)
        with self.assertRaises(TypeError):
            self.server.request(lambda ctx, body: None)
        with self.assertRaises(ValueError):
            self.server.request("chat.room.join")
        # The decorators give the function back, callable on its own.
        server = kiwano.Server()

        @server.request("a.b")
        def handler(ctx, body):
            return body

        self.assertEqual(handler(None, 5), 5)

    def test_hooks(self):
        testing.reset()
        s = new_server()
        with self.assertRaises(Error) as cm:
            s.init(kiwano.InitInfo("room", "room-1", 0, {"fail": True}))
        self.assertEqual(cm.exception.code, "RH-003")
        s.init(kiwano.InitInfo("room", "room-1", 1, {}))
        self.assertEqual(testing.group_members("room"), [])
        fired, stopped = [], []
        s.on_timer(lambda id, payload: fired.append((id, payload)))
        s.on_shutdown(lambda: stopped.append(True))
        s.timer(7, b"tick")
        s.shutdown()
        self.assertEqual((fired, stopped), ([(7, b"tick")], [True]))
        # Without hooks, nothing happens.
        bare = kiwano.Server()
        bare.init()
        bare.shutdown()
        bare.timer(1, b"")
        bare.session_closed(MockSession(1))

    def test_guest_outside_a_component(self):
        self.assertFalse(_host.IN_COMPONENT)
        Guest = self.server.guest()
        self.assertIs(Guest.__kiwano_server__, self.server)


class ContextTests(unittest.TestCase):
    def setUp(self):
        testing.reset()

    def test_session(self):
        s = MockSession(42, handshake={"sys": {"platform": "mac"}, "user": {"age": 30}}, remote_address="10.0.0.1:999")
        ctx = Context(s)
        self.assertEqual((ctx.session_id, ctx.uid, ctx.remote_address), (42, None, "10.0.0.1:999"))
        self.assertEqual(ctx.handshake, {"sys": {"platform": "mac"}, "user": {"age": 30}})
        self.assertFalse(ctx.displaced)
        self.assertIsNone(ctx.leaving_uid)
        with self.assertRaises(Error) as cm:
            ctx.bind("")
        self.assertEqual(cm.exception, Error("PIT-400", "illegal uid: the uid is empty"))
        ctx.bind("p1")
        self.assertEqual((ctx.uid, ctx.leaving_uid, s.uid), ("p1", "p1", "p1"))
        other = MockSession(43)
        Context(other).bind("p1")
        self.assertTrue(ctx.displaced)
        self.assertIsNone(ctx.leaving_uid)
        self.assertEqual(repr(ctx), "<kiwano.Context session 42>")

    def test_data(self):
        s = MockSession(1)
        ctx = s.context()
        self.assertIsNone(ctx.get("room"))
        self.assertEqual(ctx.get("room", "lobby"), "lobby")
        ctx.set("room", "r1")
        ctx.set("score", {"n": 1.5, "tags": ["a"]})
        self.assertEqual(ctx.get("room"), "r1")
        self.assertEqual(ctx.get_raw("score"), '{"n":1.5,"tags":["a"]}')
        self.assertEqual(s.data, {"room": "r1", "score": {"n": 1.5, "tags": ["a"]}})
        self.assertEqual(ctx.data(), s.data)
        ctx.set_raw("level", "3")
        self.assertEqual(ctx.get("level"), 3)
        with self.assertRaises(Error) as cm:
            ctx.set_raw("bad", "{")
        self.assertEqual(cm.exception.code, "PIT-400")
        ctx.set_data({"only": True})
        self.assertEqual(ctx.data(), {"only": True})
        with self.assertRaises(TypeError):
            ctx.set_data([1])
        with self.assertRaises(Error) as cm:
            ctx.set("x", object())
        self.assertEqual(cm.exception.code, "PIT-500")

    def test_push_kick_pin(self):
        s = MockSession(1)
        ctx = Context(s)
        ctx.push("onHello", {"a": 1, "é": "ü"})
        ctx.push_raw("onRaw", b"\x01")
        ctx.kick()
        ctx.pin("room", "room-2")
        self.assertEqual(s.pushes, [("onHello", '{"a":1,"é":"ü"}'.encode()), ("onRaw", b"\x01")])
        self.assertTrue(s.kicked)
        self.assertEqual(s.pins, [("room", "room-2")])


class HostTests(unittest.TestCase):
    def setUp(self):
        testing.reset()

    def test_users(self):
        a, b = MockSession(1), MockSession(2)
        testing.bind_user("a", a)
        testing.bind_user("b", b)
        self.assertEqual(users.push("onX", {"v": 1}, ["a", "b", "c"]), ["c"])
        self.assertEqual(users.push_raw("onY", b"raw", "a"), [])  # one uid as a string
        self.assertEqual(a.pushes, [("onX", b'{"v":1}'), ("onY", b"raw")])
        self.assertEqual(b.pushes, [("onX", b'{"v":1}')])
        self.assertEqual(users.kick(("b", "z")), ["z"])
        self.assertTrue(b.kicked)
        self.assertFalse(a.kicked)

    def test_groups(self):
        def err(f, *args):
            with self.assertRaises(Error) as cm:
                f(*args)
            return (cm.exception.code, cm.exception.msg)

        groups.create("g")
        self.assertEqual(err(groups.create, "g"), ("PIT-400", "group already exists"))
        groups.add("g", "u1")
        groups.add("g", "u2")
        self.assertEqual(err(groups.add, "g", "u1"), ("PIT-400", "member already exists in group"))
        self.assertEqual(err(groups.add, "g", ""), ("PIT-400", "empty uid"))
        self.assertEqual(err(groups.add, "nope", "u1"), ("PIT-404", "group not found"))
        self.assertEqual(groups.members("g"), ["u1", "u2"])
        self.assertEqual(groups.count("g"), 2)
        self.assertTrue(groups.contains("g", "u1"))
        self.assertFalse(groups.contains("g", "u9"))
        groups.remove("g", "u1")
        self.assertEqual(err(groups.remove, "g", "u1"), ("PIT-404", "member not found in the group"))
        self.assertEqual(err(groups.renew, "g"), ("PIT-404", "memory group TTL not found"))
        groups.create("t", ttl=30)
        groups.create("td", ttl=datetime.timedelta(milliseconds=1500))
        groups.renew("t")
        s = MockSession(1)
        testing.bind_user("u2", s)
        groups.broadcast("g", "onG", ["x"])
        groups.broadcast_raw("g", "onR", b"r")
        self.assertEqual(s.pushes, [("onG", b'["x"]'), ("onR", b"r")])
        groups.remove_all("g")
        self.assertEqual(groups.members("g"), [])
        self.assertEqual(testing.groups(), ["g", "t", "td"])
        groups.delete("g")
        self.assertEqual(err(groups.delete, "g"), ("PIT-404", "group not found"))
        self.assertIsNone(testing.group_members("g"))
        with self.assertRaises(ValueError):
            groups.create("neg", ttl=-1)
        with self.assertRaises(TypeError):
            groups.create("str", ttl="10")

    def test_rpc(self):
        with self.assertRaises(Error) as cm:
            rpc.call("room.room.count", {})
        self.assertEqual(cm.exception, Error("PIT-500", "no servers available of this type: room"))

        @testing.on_rpc
        def answer(server_id, route, body):
            if route == "room.room.fail":
                raise Error("RH-009", "remote says no", who="room")
            if route == "room.room.empty":
                return b""
            return b'{"server":' + _json.dumps(server_id) + b',"route":"' + route.encode() + b'","body":' + body + b"}"

        self.assertEqual(rpc.call("room.room.count", {"a": 1}), {"server": None, "route": "room.room.count", "body": {"a": 1}})
        self.assertEqual(rpc.call_to("room-2", "room.room.count", [1], timeout=1.5)["server"], "room-2")
        self.assertEqual(rpc.call_raw("room.room.x", b"1"), b'{"server":null,"route":"room.room.x","body":1}')
        self.assertEqual(rpc.call_to_raw("r-1", "room.room.x", b"2", timeout=datetime.timedelta(seconds=2))[:15], b'{"server":"r-1"')
        with self.assertRaises(Error) as cm:
            rpc.call("room.room.fail")
        self.assertEqual(cm.exception, Error("RH-009", "remote says no", who="room"))
        with self.assertRaises(Error) as cm:
            rpc.call("room.room.empty")
        self.assertEqual(cm.exception, Error("PIT-400", "invalid JSON: EOF while parsing a value at line 1 column 0"))
        calls = testing.rpc_calls()
        self.assertEqual(calls[1], (None, "room.room.count", b'{"a":1}', None))
        self.assertEqual(calls[2], ("room-2", "room.room.count", b"[1]", 1500))
        self.assertEqual(calls[4][3], 2000)

    def test_timers(self):
        t1 = timers.after(0.25, b"once")
        t2 = timers.every(datetime.timedelta(seconds=2), "tick")
        t3 = timers.after(4.35)
        self.assertEqual(
            testing.timers(),
            [
                testing.MockTimer(t1, 250, False, b"once"),
                testing.MockTimer(t2, 2000, True, b"tick"),
                testing.MockTimer(t3, 4350, False, b""),
            ],
        )
        self.assertTrue(timers.cancel(t1))
        self.assertFalse(timers.cancel(t1))
        testing.set_max_timers(2)
        with self.assertRaises(Error) as cm:
            timers.every(1)
        self.assertEqual(cm.exception, Error("PIT-500", "timer not set: this instance holds its maximum of live timers"))
        # A delay over a year is refused before the host is asked.
        with self.assertRaises(Error) as cm:
            timers.after(datetime.timedelta(days=366))
        self.assertEqual(cm.exception, Error("PIT-400", "timer not set: the delay is longer than a year"))

    def test_log(self):
        log.trace("t")
        log.debug("d")
        log.info("i", a=1)
        log.warn("w")
        log.error("e", why="x")
        log.log("info", "direct")
        self.assertEqual(testing.logs(), [("trace", "t"), ("debug", "d"), ("info", "i"), ("warn", "w"), ("error", "e"), ("info", "direct")])
        self.assertEqual(testing.log_records()[2], ("info", "i", {"a": "1"}))
        with self.assertRaises(ValueError):
            log.log("fatal", "x")

    def test_reset(self):
        groups.create("g")
        timers.after(1)
        testing.reset()
        self.assertEqual((testing.groups(), testing.timers(), testing.logs()), ([], [], []))


class MetricsTests(unittest.TestCase):
    """kiwano.metrics against the in-memory host, which checks as the host does."""

    def setUp(self):
        testing.reset()
        # Metrics defined here leave the SDK's list of defined metrics (which `Server.init`
        # declares) as it was: a bad one would fail every later init.
        defined = list(metrics._defined)
        self.addCleanup(lambda: metrics._defined.__setitem__(slice(None), defined))

    def refused(self, f, *args, **kwargs):
        with self.assertRaises(Error) as cm:
            f(*args, **kwargs)
        return (cm.exception.code, cm.exception.msg)

    def test_counter_by_position_and_by_name(self):
        hits = metrics.counter("hits", "Hits by color", labels=("color",))
        self.assertIsNone(hits.labels("red").inc())
        self.assertIsNone(hits.labels("red").inc(2))
        self.assertIsNone(hits.labels(color="blue").inc(0.5))
        self.assertEqual(testing.metric_value("hits", ("red",)), 3.0)
        self.assertIs(type(testing.metric_value("hits", ["red"])), float)
        self.assertEqual(testing.metric_value("hits", "blue"), 0.5)
        self.assertEqual(testing.metric_value("hits", {"color": "blue"}), 0.5)
        self.assertIsNone(testing.metric_value("hits", ("green",)))
        self.assertIsNone(testing.metric_value("nothing"))
        self.assertEqual(
            testing.declared_metrics(), [testing.MockMetric(0, "hits", "Hits by color", "counter", ("color",), ())]
        )
        plain = metrics.counter("plain_total", "No labels")
        plain.inc()
        plain.inc(4)
        self.assertEqual(testing.metric_value("plain_total"), 5.0)
        # Label values are strings.
        hits.labels(7).inc()
        self.assertEqual(testing.metric_value("hits", ("7",)), 1.0)

    def test_labels_by_name_in_declared_order(self):
        moves = metrics.counter("moves", "Moves", labels=("piece", "color"))
        moves.labels(color="white", piece="pawn").inc()
        self.assertEqual(testing.metric_value("moves", ("pawn", "white")), 1.0)
        with self.assertRaises(ValueError):
            moves.labels(piece="pawn", colour="white")
        with self.assertRaises(ValueError):
            moves.labels(piece="pawn")
        with self.assertRaises(TypeError):
            moves.labels("pawn", color="white")

    def test_gauge(self):
        level = metrics.gauge("level", "Level")
        level.set(3)
        level.inc()
        level.dec(0.5)
        self.assertEqual(testing.metric_value("level"), 3.5)
        level.dec(10)
        self.assertEqual(testing.metric_value("level"), -6.5)
        rooms = metrics.gauge("rooms", "Rooms by mode", labels=["mode"])
        rooms.labels("duel").inc(2)
        rooms.labels(mode="duel").dec()
        rooms.labels("team").set(-1)
        self.assertEqual(testing.metric_value("rooms", ("duel",)), 1.0)
        self.assertEqual(testing.metric_value("rooms", ("team",)), -1.0)

    def test_histogram(self):
        size = metrics.histogram("size", "Sizes", labels=("kind",), buckets=(1, 10, 100))
        self.assertIsNone(size.labels("small").observe(3))
        size.labels(kind="small").observe(0.5)
        size.labels("big").observe(250)
        self.assertEqual(testing.histogram("size", ("small",)), (2, 3.5))
        self.assertEqual(testing.histogram("size", ("big",)), (1, 250.0))
        self.assertIsNone(testing.histogram("size", ("none",)))
        self.assertEqual(testing.declared_metrics()[0].buckets, (1.0, 10.0, 100.0))
        latency = metrics.histogram("latency_seconds", "Latency")
        latency.observe(0.02)
        self.assertEqual(testing.histogram("latency_seconds"), (1, 0.02))
        self.assertEqual(testing.declared_metrics()[1].buckets, ())
        with self.assertRaises(TypeError):
            testing.metric_value("size", ("small",))

    def test_the_host_refuses_a_recording(self):
        hits = metrics.counter("hits", "Hits by color", labels=("color",))
        self.assertEqual(self.refused(hits.labels("red").inc, -1), ("PIT-400", 'metric "hits": a counter only goes up (add -1)'))
        self.assertEqual(self.refused(hits.inc, -0.5), ("PIT-400", 'metric "hits" has labels [color]: 0 values given'))
        self.assertEqual(self.refused(hits.labels("red").inc, -0.5), ("PIT-400", 'metric "hits": a counter only goes up (add -0.5)'))
        self.assertEqual(
            self.refused(hits.labels("red", "blue").inc), ("PIT-400", 'metric "hits" has labels [color]: 2 values given')
        )
        self.assertEqual(
            self.refused(hits.labels("red").inc, math.inf), ("PIT-400", 'metric "hits": the value must be finite')
        )
        self.assertEqual(
            self.refused(hits.labels("x" * 129).inc), ("PIT-400", 'metric "hits": a label value of 129 bytes is over 128')
        )
        self.assertIsNone(testing.metric_value("hits", ("red",)))
        level = metrics.gauge("level", "Level")
        self.assertEqual(self.refused(level.labels("a").set, 1), ("PIT-400", 'metric "level" has labels []: 1 values given'))
        self.assertEqual(self.refused(level.set, math.nan), ("PIT-400", 'metric "level": the value must be finite'))
        level.dec(2)  # a gauge goes down
        # Op against kind, as the host words it.
        host = _host.current()
        ids = {m.name: m.id for m in testing.declared_metrics()}
        self.assertEqual(
            self.refused(host.metric_set, ids["hits"], ["red"], 1.0),
            ("PIT-400", 'metric "hits" is a counter: record it with add'),
        )
        self.assertEqual(
            self.refused(host.metric_observe, ids["level"], [], 1.0),
            ("PIT-400", 'metric "level" is a gauge: record it with add or set'),
        )
        size = metrics.histogram("size", "Sizes")
        size.observe(1)
        self.assertEqual(
            self.refused(host.metric_add, testing.declared_metrics()[2].id, [], 1.0),
            ("PIT-400", 'metric "size" is a histogram: record it with observe'),
        )
        self.assertEqual(self.refused(host.metric_add, 99, [], 1.0), ("PIT-400", "no metric with id 99"))
        # Python's own mistakes are Python errors.
        with self.assertRaises(ValueError):
            hits.labels("red").inc("lots")

    def test_the_host_refuses_a_spec(self):
        cases = [
            (metrics.counter, ("Hits", "h"), 'metric name "Hits" must match [a-z][a-z0-9_]* and be at most 64 bytes'),
            (metrics.counter, ("h" * 65, "h"), f'metric name "{"h" * 65}" must match [a-z][a-z0-9_]* and be at most 64 bytes'),
            (metrics.gauge, ("rooms_count", "h"), 'metric name "rooms_count" must not end in _bucket, _count or _sum'),
            (metrics.gauge, ("rooms_total", "h"), 'metric name "rooms_total": only a counter\'s name may end in _total'),
            (metrics.counter, ("quiet", ""), 'metric "quiet": help must not be empty'),
            (metrics.counter, ("long", "é" * 129), 'metric "long": help of 258 bytes is over 256'),
            (metrics.counter, ('say "hi"', "h"), 'metric name "say \\"hi\\"" must match [a-z][a-z0-9_]* and be at most 64 bytes'),
            (metrics.counter, ("many", "h", [f"l{i}" for i in range(9)]), 'metric "many": at most 8 labels'),
            (
                metrics.counter,
                ("bad", "h", ["Color"]),
                'metric "bad": label name "Color" must match [a-z][a-z0-9_]* and be at most 64 bytes',
            ),
            (metrics.counter, ("res", "h", ["le"]), 'metric "res": label name "le" is reserved'),
            (metrics.counter, ("dup", "h", ["a", "a"]), 'metric "dup": label name "a" appears twice'),
            (metrics.histogram, ("dec", "h", (), (2, 1)), 'metric "dec": buckets must be finite and increasing, at most 32'),
            (metrics.histogram, ("inf", "h", (), (1, math.inf)), 'metric "inf": buckets must be finite and increasing, at most 32'),
            (metrics.histogram, ("big", "h", (), range(33)), 'metric "big": buckets must be finite and increasing, at most 32'),
        ]
        for define, args, msg in cases:
            m = define(*args)
            record = m.observe if isinstance(m, metrics.Histogram) else m.inc
            self.assertEqual(self.refused(record, 1), ("PIT-400", msg))
        self.assertEqual(testing.declared_metrics(), [])
        metrics.counter("twice", "one help").inc()
        other = metrics.counter("twice", "another help")
        self.assertEqual(
            self.refused(other.inc),
            (
                "PIT-400",
                'metric "twice" is already declared with other labels, kind, help or buckets (by server type test); '
                "a changed metric needs a new name, or a new version of the one server type declaring it",
            ),
        )
        same = metrics.counter("twice", "one help")
        same.inc(2)
        self.assertEqual(testing.metric_value("twice"), 3.0)
        # Names are compared as exported: `twice` is `kiwano_guest_twice_total`.
        metrics.counter("twice_total", "one help").inc()
        self.assertEqual(testing.metric_value("twice_total"), 4.0)
        self.assertEqual([m.name for m in testing.declared_metrics()], ["twice"])
        # A histogram without buckets has the default ones.
        metrics.histogram("lat", "h").observe(1)
        metrics.histogram("lat", "h", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)).observe(1)
        self.assertEqual(testing.histogram("lat"), (2, 2.0))
        with self.assertRaises(TypeError):
            metrics.counter(b"bytes", "h")
        with self.assertRaises(TypeError):
            metrics.counter("c", "h", labels=[1])

    def test_limits(self):
        for i in range(128):
            metrics.gauge(f"g{i}", "h").set(i)
        self.assertEqual(
            self.refused(metrics.gauge("g128", "h").set, 1),
            ("PIT-500", "metric limit reached: server type test declares at most 128 metrics"),
        )
        testing.reset()
        testing.set_max_metric_series(2)
        hits = metrics.counter("hits", "Hits", labels=("color",))
        hits.labels("red").inc()
        hits.labels("blue").inc()
        hits.labels("red").inc()  # not a new series
        self.assertEqual(
            self.refused(hits.labels("green").inc),
            ("PIT-500", "metric series limit reached: server type test records at most 2 series (servers.test.max_metric_series)"),
        )

    def test_declared_lazily_once_per_host(self):
        hits = metrics.counter("hits", "Hits", labels=("color",))
        self.assertEqual(testing.declared_metrics(), [])  # defining declares nothing
        declared = []
        host = _host.current()
        declare = host.metric_declare
        host.metric_declare = lambda *spec: declared.append(spec[0]) or declare(*spec)
        hits.labels("red").inc()
        hits.labels("blue").inc()
        self.assertEqual(declared, ["hits"])  # the id is kept
        self.assertEqual([m.name for m in testing.declared_metrics()], ["hits"])
        testing.reset()  # a new host: declared again on the next use
        hits.labels("red").inc()
        self.assertEqual([m.name for m in testing.declared_metrics()], ["hits"])
        self.assertEqual(testing.metric_value("hits", ("red",)), 1.0)

    def test_init_declares_every_metric_before_the_hook(self):
        a = metrics.counter("a_total", "A")
        metrics.histogram("b", "B", labels=("k",), buckets=(1, 2))
        server = kiwano.Server()
        seen = []

        @server.on_init
        def init(info):
            seen.append([m.name for m in testing.declared_metrics()])

        server.init()
        self.assertEqual(seen, [["a_total", "b"]])
        a.inc()
        self.assertEqual(len(testing.declared_metrics()), 2)
        # A spec the host refuses fails init with the host's error, before the hook.
        metrics.gauge("Bad", "B")
        seen.clear()
        testing.reset()
        self.assertEqual(
            self.refused(server.init),
            ("PIT-400", 'metric name "Bad" must match [a-z][a-z0-9_]* and be at most 64 bytes'),
        )
        self.assertEqual(seen, [])
        # Without metrics, init asks nothing of the host.
        metrics._defined.clear()
        testing.reset()
        server.init()
        self.assertEqual(seen, [[]])

    def test_reset_clears_metrics(self):
        metrics.gauge("level", "Level").set(1)
        testing.reset()
        self.assertEqual((testing.declared_metrics(), testing.metric_value("level")), ([], None))


if __name__ == "__main__":
    unittest.main()
