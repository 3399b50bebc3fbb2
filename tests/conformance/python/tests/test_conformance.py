"""The Python conformance server (tests/conformance/README.md) against the SDK's in-memory host,
route by route, checking the bytes it answers and pushes:

    python3 -m unittest discover -s tests/conformance/python/tests
"""

import os
import sys
import unittest
from unittest import mock

# No bytecode caches beside the sources: kiwano.toml's `sources` would see them as changes.
sys.dont_write_bytecode = True
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "app"))
sys.path.insert(0, os.path.join(here, "..", "..", "..", "..", "guest-sdk", "python"))

import kiwano  # noqa: E402
from kiwano import groups, testing  # noqa: E402
from kiwano.testing import MockSession  # noqa: E402

import app  # noqa: E402


def backend(server_id, route, body):
    """Answers `rpc.call("confback.<route>")` with the server's own remotes, as `confback` does."""
    server_type, _, remote = route.partition(".")
    assert (server_id, server_type) == (None, "confback"), route
    return app.server.remote_call(remote, body)


class Conformance(unittest.TestCase):
    def setUp(self):
        testing.reset()
        self.s = app.server
        self.s.init(kiwano.InitInfo("conf", "conf-1", 0, {}))

    def handle(self, session, route, body):
        return self.s.handle(session, route, body)

    def refused(self, session, route, body):
        with self.assertRaises(kiwano.Error) as cm:
            self.s.handle(session, route, body)
        return cm.exception

    def bound(self, id, uid):
        session = MockSession(id)
        self.assertEqual(self.handle(session, "conf.bind", b'{"uid":"%s"}' % uid.encode()), b'{"uid":"%s"}' % uid.encode())
        return session

    def test_describe(self):
        d = self.s.describe()
        self.assertEqual(
            d.handlers,
            [
                ("conf.bind", "request"),
                ("conf.echo", "request"),
                ("conf.fail", "request"),
                ("conf.get", "request"),
                ("conf.handshake", "request"),
                ("conf.join", "request"),
                ("conf.kick", "request"),
                ("conf.kickusers", "request"),
                ("conf.leave", "request"),
                ("conf.members", "request"),
                ("conf.metric", "request"),
                ("conf.note", "notify"),
                ("conf.push", "request"),
                ("conf.rpc", "request"),
                ("conf.rpcfail", "request"),
                ("conf.set", "request"),
                ("conf.timer", "request"),
                ("conf.users", "request"),
            ],
        )
        self.assertEqual((d.remotes, d.affinity), (["remote.add", "remote.fail"], None))

    def test_init_does_nothing_but_declare_the_metrics(self):
        self.assertEqual((testing.groups(), testing.logs()), ([], []))
        self.assertEqual(
            testing.declared_metrics(),
            [
                testing.MockMetric(0, "conf_hits", "Hits by color", "counter", ("color",), ()),
                testing.MockMetric(1, "conf_level", "Level", "gauge", (), ()),
                testing.MockMetric(2, "conf_size", "Sizes", "histogram", ("kind",), (1.0, 10.0, 100.0)),
            ],
        )

    def test_metric(self):
        a = MockSession(1)
        self.assertEqual(self.handle(a, "conf.metric", b'{"labels":["red"],"metric":"hits","value":2}'), b'{"recorded":"hits"}')
        self.handle(a, "conf.metric", b'{"labels":["red"],"metric":"hits","value":0.5}')
        self.assertEqual(testing.metric_value("conf_hits", ("red",)), 2.5)
        self.assertEqual(self.handle(a, "conf.metric", b'{"labels":[],"metric":"level","value":-3}'), b'{"recorded":"level"}')
        self.assertEqual(testing.metric_value("conf_level"), -3.0)
        self.assertEqual(self.handle(a, "conf.metric", b'{"labels":["small"],"metric":"size","value":7}'), b'{"recorded":"size"}')
        self.assertEqual(testing.histogram("conf_size", ("small",)), (1, 7.0))
        # Host errors as they are: the label values go to the host uncounted.
        cases = [
            (b'{"labels":[],"metric":"hits","value":1}', 'metric "conf_hits" has labels [color]: 0 values given'),
            (b'{"labels":["a","b"],"metric":"hits","value":1}', 'metric "conf_hits" has labels [color]: 2 values given'),
            (b'{"labels":["red"],"metric":"hits","value":-1}', 'metric "conf_hits": a counter only goes up (add -1)'),
            (b'{"labels":["x"],"metric":"level","value":1}', 'metric "conf_level" has labels []: 1 values given'),
            (b'{"labels":[],"metric":"size","value":1}', 'metric "conf_size" has labels [kind]: 0 values given'),
        ]
        for body, msg in cases:
            self.assertEqual(self.refused(a, "conf.metric", body), kiwano.Error("PIT-400", msg))
        self.assertEqual(
            self.refused(a, "conf.metric", b'{"labels":[],"metric":"other","value":1}'),
            kiwano.Error("PIT-400", "no metric other"),
        )
        self.assertEqual(testing.metric_value("conf_hits", ("red",)), 2.5)

    def test_metric_series_limit(self):
        # kiwano.toml: max_metric_series = 3 for conf.
        testing.set_max_metric_series(3)
        a = MockSession(1)
        for color in ("red", "green", "blue"):
            self.handle(a, "conf.metric", b'{"labels":["%s"],"metric":"hits","value":1}' % color.encode())
        self.handle(a, "conf.metric", b'{"labels":["red"],"metric":"hits","value":1}')
        self.assertEqual(
            self.refused(a, "conf.metric", b'{"labels":[],"metric":"level","value":1}'),
            kiwano.Error(
                "PIT-500",
                "metric series limit reached: server type test records at most 3 series (servers.test.max_metric_series)",
            ),
        )
        self.assertEqual(testing.metric_value("conf_hits", ("red",)), 2.0)

    def test_echo(self):
        a = MockSession(1)
        self.assertEqual(self.handle(a, "conf.echo", b'{"x":[1,2.5,"h\xc3\xa9"],"y":null}'), b'{"echo":{"x":[1,2.5,"h\xc3\xa9"],"y":null}}')
        self.assertEqual(self.handle(a, "conf.echo", b"7"), b'{"echo":7}')
        self.assertEqual(self.handle(a, "conf.echo", b""), b'{"echo":null}')
        e = self.refused(a, "conf.echo", b"{")
        self.assertEqual(e, kiwano.Error("PIT-400", "invalid JSON: EOF while parsing an object at line 1 column 1"))

    def test_fail(self):
        e = self.refused(MockSession(1), "conf.fail", b"")
        self.assertEqual(e, kiwano.Error("CF-001", "conformance failure", route="conf.fail", kind="custom"))
        self.assertEqual(list(e.metadata), ["route", "kind"])

    def test_bind(self):
        a = self.bound(1, "alice")
        self.assertEqual(a.uid, "alice")
        # Host errors as they are.
        e = self.refused(a, "conf.bind", b'{"uid":"bob"}')
        self.assertEqual(e, kiwano.Error("PIT-400", 'session is already bound to an uid ("alice")'))
        self.assertEqual(self.refused(MockSession(2), "conf.bind", b'{"uid":""}'), kiwano.Error("PIT-400", "illegal uid: the uid is empty"))

    def test_set_and_get(self):
        a = MockSession(1)
        self.assertEqual(self.handle(a, "conf.get", b'{"key":"k"}'), b'{"key":"k","value":null}')
        self.assertEqual(self.handle(a, "conf.set", b'{"key":"k","value":{"n":1}}'), b'{"data":{"k":{"n":1}}}')
        self.assertEqual(self.handle(a, "conf.set", b'{"key":"a","value":[true]}'), b'{"data":{"k":{"n":1},"a":[true]}}')
        self.assertEqual(self.handle(a, "conf.get", b'{"key":"k"}'), b'{"key":"k","value":{"n":1}}')
        self.assertEqual(self.handle(a, "conf.get", b'{"key":"a"}'), b'{"key":"a","value":[true]}')
        self.assertEqual(a.data, {"k": {"n": 1}, "a": [True]})

    def test_push_and_note(self):
        a = MockSession(1)
        self.assertEqual(self.handle(a, "conf.push", b'{"route":"onThing","body":{"z":1,"a":"b"}}'), b'{"pushed":"onThing"}')
        self.assertEqual(self.handle(a, "conf.note", b'{"text":"hi"}'), b"")
        self.assertEqual(a.pushes, [("onThing", b'{"z":1,"a":"b"}'), ("onNote", b'{"text":"hi"}')])

    def test_kick(self):
        a = MockSession(1)
        self.assertEqual(self.handle(a, "conf.kick", b""), b'{"kicked":true}')
        self.assertTrue(a.kicked)

    def test_join(self):
        self.assertEqual(self.refused(MockSession(9), "conf.join", b'{"group":"g"}'), kiwano.Error("CF-002", "bind first"))
        self.assertEqual(testing.groups(), [])
        a = self.bound(1, "alice")
        self.assertEqual(self.handle(a, "conf.join", b'{"group":"g"}'), b'{"group":"g","members":["alice"],"count":1}')
        b = self.bound(2, "bob")
        # The group exists now: its creation error is ignored.
        self.assertEqual(self.handle(b, "conf.join", b'{"group":"g"}'), b'{"group":"g","members":["alice","bob"],"count":2}')
        join = ("onJoin", b'{"uid":"bob","members":["alice","bob"]}')
        self.assertEqual(a.pushes, [("onJoin", b'{"uid":"alice","members":["alice"]}'), join])
        self.assertEqual(b.pushes, [join])
        # Host errors as they are.
        self.assertEqual(self.refused(b, "conf.join", b'{"group":"g"}'), kiwano.Error("PIT-400", "member already exists in group"))
        self.assertEqual(testing.group_members("g"), ["alice", "bob"])

    def test_join_returns_other_create_errors(self):
        # The in-memory host refuses a create only with "group already exists": stand in one
        # that refuses it otherwise.
        a = self.bound(1, "alice")
        refusal = kiwano.Error("PIT-500", "groups unavailable", name="g")
        with mock.patch.object(testing._mock, "group_create", side_effect=refusal):
            self.assertEqual(self.refused(a, "conf.join", b'{"group":"g"}'), refusal)
        self.assertEqual(testing.groups(), [])

    def test_leave(self):
        self.assertEqual(self.refused(MockSession(9), "conf.leave", b'{"group":"g"}'), kiwano.Error("CF-002", "bind first"))
        a = self.bound(1, "alice")
        self.assertEqual(self.refused(a, "conf.leave", b'{"group":"g"}'), kiwano.Error("PIT-404", "group not found"))
        self.handle(a, "conf.join", b'{"group":"g"}')
        self.assertEqual(self.handle(a, "conf.leave", b'{"group":"g"}'), b'{"group":"g","contains":false}')
        self.assertEqual(self.refused(a, "conf.leave", b'{"group":"g"}'), kiwano.Error("PIT-404", "member not found in the group"))

    def test_members(self):
        a = self.bound(1, "alice")
        self.assertEqual(self.refused(a, "conf.members", b'{"group":"g"}'), kiwano.Error("PIT-404", "group not found"))
        groups.create("g")
        self.assertEqual(self.handle(a, "conf.members", b'{"group":"g"}'), b'{"members":[]}')
        self.handle(a, "conf.join", b'{"group":"g"}')
        self.assertEqual(self.handle(a, "conf.members", b'{"group":"g"}'), b'{"members":["alice"]}')

    def test_users_and_kickusers(self):
        a = self.bound(1, "alice")
        b = self.bound(2, "bob")
        out = self.handle(a, "conf.users", b'{"route":"onHi","body":{"n":[1]},"uids":["bob","nobody","alice"]}')
        self.assertEqual(out, b'{"missed":["nobody"]}')
        self.assertEqual((a.pushes, b.pushes), ([("onHi", b'{"n":[1]}')], [("onHi", b'{"n":[1]}')]))
        self.assertEqual(self.handle(a, "conf.kickusers", b'{"uids":["ghost","bob"]}'), b'{"missed":["ghost"]}')
        self.assertEqual((a.kicked, b.kicked), (False, True))
        self.assertEqual(self.handle(a, "conf.kickusers", b'{"uids":[]}'), b'{"missed":[]}')

    def test_rpc(self):
        a = MockSession(1)
        testing.on_rpc(backend)
        self.assertEqual(self.handle(a, "conf.rpc", b'{"a":2,"b":-5}'), b'{"remote":{"sum":-3}}')
        self.assertEqual(testing.rpc_calls(), [(None, "confback.remote.add", b'{"a":2,"b":-5}', None)])
        # The remote's error as it is.
        e = self.refused(a, "conf.rpcfail", b"")
        self.assertEqual(e, kiwano.Error("CF-003", "remote refused", side="remote"))
        self.assertEqual(testing.rpc_calls()[1], (None, "confback.remote.fail", b"{}", None))

    def test_rpc_host_error(self):
        # No confback server: the host's error as it is.
        want = kiwano.Error("PIT-500", "no servers available of this type: confback")
        self.assertEqual(self.refused(MockSession(1), "conf.rpc", b'{"a":1,"b":2}'), want)
        self.assertEqual(self.refused(MockSession(1), "conf.rpcfail", b""), want)

    def test_remotes(self):
        self.assertEqual(self.s.remote_call("remote.add", b'{"a":40,"b":2}'), b'{"sum":42}')
        with self.assertRaises(kiwano.Error) as cm:
            self.s.remote_call("remote.fail", b"")
        self.assertEqual(cm.exception, kiwano.Error("CF-003", "remote refused", side="remote"))

    def test_timer(self):
        self.assertEqual(self.refused(MockSession(9), "conf.timer", b'{"ms":10,"tag":"t"}'), kiwano.Error("CF-002", "bind first"))
        self.assertEqual(testing.timers(), [])
        a = self.bound(1, "alice")
        self.assertEqual(self.handle(a, "conf.timer", b'{"ms":250,"tag":"t1"}'), b'{"timer":"set"}')
        self.assertEqual(testing.timers(), [testing.MockTimer(1, 250, False, b'{"uid":"alice","tag":"t1"}')])
        # The host fires it: the tag goes to the user.
        t = testing.timers()[0]
        self.s.timer(t.id, t.payload)
        self.assertEqual(a.pushes, [("onTimer", b'{"tag":"t1"}')])

    def test_handshake(self):
        hs = {"sys": {"platform": "mac", "libVersion": "0.3.5"}, "user": {"age": 30}}
        a = MockSession(1, handshake=hs)
        out = self.handle(a, "conf.handshake", b"")
        self.assertEqual(out, b'{"platform":"mac","user":{"age":30}}')

    def test_session_close_leaves_the_lobby(self):
        a = self.bound(1, "alice")
        b = self.bound(2, "bob")
        self.handle(a, "conf.join", b'{"group":"lobby"}')
        self.handle(b, "conf.join", b'{"group":"lobby"}')
        b.pushes.clear()
        self.s.session_closed(a)
        self.assertEqual(testing.group_members("lobby"), ["bob"])
        self.assertEqual(b.pushes, [("onLeave", b'{"uid":"alice"}')])
        self.assertEqual(testing.logs(), [])

    def test_session_close_of_a_displaced_or_unbound_session_or_a_non_member(self):
        a = self.bound(1, "alice")
        self.handle(a, "conf.join", b'{"group":"lobby"}')
        testing.bind_user("alice", MockSession(2))
        self.assertTrue(a.displaced)
        self.s.session_closed(a)
        self.s.session_closed(MockSession(3))
        self.s.session_closed(self.bound(4, "carol"))
        self.assertEqual(testing.group_members("lobby"), ["alice"])
        self.assertEqual(a.pushes, [("onJoin", b'{"uid":"alice","members":["alice"]}')])
        self.assertEqual(testing.logs(), [])

    def test_session_close_errors_are_logged(self):
        self.s.session_closed(self.bound(1, "alice"))  # no group `lobby`
        self.assertEqual(testing.logs(), [("warn", "on_session_close: PIT-404: group not found")])


if __name__ == "__main__":
    unittest.main()
