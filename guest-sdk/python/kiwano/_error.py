"""`kiwano.Error`: a Pitaya error with a code, a message and metadata."""

__all__ = ["Error"]


class Error(Exception):
    """A Pitaya error, as the client sees it: `{"code":..,"msg":..,"metadata":{..}}`.

    Raise it from a handler to fail the call; host functions (`groups.add`, `ctx.bind`, ...) raise
    it when they fail, so a handler can let it through to the client unchanged::

        raise kiwano.Error("RH-001", "room is full", room="lobby", limit=8)
        raise kiwano.Error("RH-001", "room is full", {"room": "lobby"})

    Metadata values are turned into strings. `code` is a Pitaya code such as `PIT-404` or a game's
    own; an empty code reaches the client as `PIT-000`.
    """

    def __init__(self, code, msg="", metadata=None, /, **fields):
        pairs = {}
        if metadata:
            pairs.update(metadata)
        pairs.update(fields)
        self.code = str(code)
        self.msg = str(msg)
        self.metadata = {str(k): str(v) for k, v in pairs.items()}
        super().__init__(self.code, self.msg)

    @classmethod
    def bad_request(cls, msg):
        """`PIT-400` with a message: a request the handler cannot accept."""
        return cls("PIT-400", msg)

    def __str__(self):
        if self.metadata:
            return f"{self.code}: {self.msg} {self.metadata}"
        return f"{self.code}: {self.msg}"

    def __repr__(self):
        if self.metadata:
            return f"kiwano.Error({self.code!r}, {self.msg!r}, {self.metadata!r})"
        return f"kiwano.Error({self.code!r}, {self.msg!r})"

    def __eq__(self, other):
        if not isinstance(other, Error):
            return NotImplemented
        return (self.code, self.msg, self.metadata) == (other.code, other.msg, other.metadata)

    __hash__ = Exception.__hash__
