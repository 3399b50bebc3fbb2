"""JSON exactly as the Rust SDK writes and reads it (serde_json 1.x), so that a Python guest and a
Rust guest put the same bytes on the wire.

- `dumps` writes compact JSON (no spaces), non-ASCII characters as UTF-8 (not `\\uXXXX`), floats
  as serde_json does (`1e-7`, not `1e-07`; `0.00001`, not `1e-05`; NaN and infinities as `null`).
  Dict keys keep their insertion order: write them in the order a Rust struct declares its fields.
- `loads` reads what `serde_json::from_slice::<serde_json::Value>` accepts, with the same numbers
  (`-0` is `-0.0`, integers beyond 64 bits are floats, serde_json's float rounding) and, for invalid
  input, serde_json's error message (`expected value at line 1 column 1`).

The fast path is the standard library's C `json`; the port of serde_json's parser below only runs
when the input is invalid or uses something `json` reads differently (`\\u` escapes, deep nesting,
long numbers).
"""

import dataclasses
import json
import math
import re

__all__ = ["dumps", "loads", "JSONError"]


class JSONError(ValueError):
    """A body that serde_json would refuse; `str()` is serde_json's message."""


# --------------------------------------------------------------------------------------------
# Writing.

def _default(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_FAST = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True, default=_default)


def format_float(f):
    """A float as serde_json writes it (the shortest round-trip digits, like `repr`, laid out as
    zmij lays them out: fixed for 1e-5 <= |f| < 1e16, else `d.ddde+N` / `d.ddde-N`)."""
    if f != f or f in (math.inf, -math.inf):
        return "null"
    r = float.__repr__(f)
    if "e" not in r:
        return r
    mantissa, exp = r.split("e")
    sign = ""
    if mantissa[0] == "-":
        sign, mantissa = "-", mantissa[1:]
    digits = mantissa.replace(".", "")
    e = int(exp)
    if -5 <= e <= 15:
        # Only e == -5 gets here (repr is fixed from 1e-4 up to 1e16).
        return sign + "0." + "0" * (-e - 1) + digits
    body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{body}e{'+' if e >= 0 else '-'}{abs(e)}"


def _slow_dumps(value, out):
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(json.encoder.encode_basestring(value))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(format_float(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for k, v in value.items():
            if not first:
                out.append(",")
            first = False
            if isinstance(k, str):
                key = k
            elif k is True:
                key = "true"
            elif k is False:
                key = "false"
            elif k is None:
                key = "null"
            elif isinstance(k, int):
                key = int.__repr__(k)
            elif isinstance(k, float):
                key = format_float(k)
            else:
                raise TypeError(f"keys must be str, int, float, bool or None, not {type(k).__name__}")
            out.append(json.encoder.encode_basestring(key))
            out.append(":")
            _slow_dumps(v, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _slow_dumps(v, out)
        out.append("]")
    else:
        _slow_dumps(_default(value), out)


def dumps(value):
    """`value` (None, bool, int, float, str, list/tuple, dict, dataclass, set) as JSON bytes."""
    text = _FAST.encode(value)
    # Python and serde_json only write floats differently below 1e-4 (`1e-05` vs `0.00001`,
    # `1e-07` vs `1e-7`) and for NaN/infinities; each of those contains one of these.
    if "e-0" in text or "NaN" in text or "Infinity" in text:
        out = []
        _slow_dumps(value, out)
        text = "".join(out)
    return text.encode("utf-8")


# --------------------------------------------------------------------------------------------
# Reading.

_U64_MAX = (1 << 64) - 1
_I32_MAX = (1 << 31) - 1
_I32_MIN = -(1 << 31)
_POW10 = [float(f"1e{i}") for i in range(309)]
_DIGITS = frozenset(b"0123456789")
_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_STRING_STOP = re.compile(rb'["\\\x00-\x1f]')


class _Syntax(Exception):
    def __init__(self, code, line, column):
        super().__init__(f"{code} at line {line} column {column}")


def _overflow(a, b, limit):
    return a >= limit // 10 and (a > limit // 10 or b > limit % 10)


class _Parser:
    """serde_json's `Deserializer<SliceRead>` driving `Value::deserialize`, step for step:
    the same checks in the same order, so errors carry the same message and position."""

    def __init__(self, data):
        self.b = data
        self.n = len(data)
        self.i = 0
        self.depth = 128

    # Positions.
    def _position(self, i):
        start = self.b.rfind(b"\n", 0, i) + 1
        return 1 + self.b.count(b"\n", 0, start), i - start

    def error(self, code):
        raise _Syntax(code, *self._position(self.i))

    def peek_error(self, code):
        raise _Syntax(code, *self._position(min(self.n, self.i + 1)))

    # Bytes.
    def peek(self):
        return self.b[self.i] if self.i < self.n else None

    def peek_or_null(self):
        return self.b[self.i] if self.i < self.n else 0

    def next_char(self):
        if self.i < self.n:
            self.i += 1
            return self.b[self.i - 1]
        return None

    def whitespace(self):
        while self.i < self.n and self.b[self.i] in b" \n\t\r":
            self.i += 1
        return self.peek()

    # Documents.
    def document(self):
        value = self.value()
        if self.whitespace() is not None:
            self.peek_error("trailing characters")
        return value

    def value(self):
        c = self.whitespace()
        if c is None:
            self.peek_error("EOF while parsing a value")
        if c == 0x6E:  # n
            self.i += 1
            self.ident(b"ull")
            return None
        if c == 0x74:  # t
            self.i += 1
            self.ident(b"rue")
            return True
        if c == 0x66:  # f
            self.i += 1
            self.ident(b"alse")
            return False
        if c == 0x2D:  # -
            self.i += 1
            return self.integer(False)
        if c in _DIGITS:
            return self.integer(True)
        if c == 0x22:  # "
            self.i += 1
            return self.string()
        if c == 0x5B:  # [
            self.depth -= 1
            if self.depth == 0:
                self.peek_error("recursion limit exceeded")
            self.i += 1
            out = self.seq()
            self.depth += 1
            self.end_seq()
            return out
        if c == 0x7B:  # {
            self.depth -= 1
            if self.depth == 0:
                self.peek_error("recursion limit exceeded")
            self.i += 1
            out = self.map()
            self.depth += 1
            self.end_map()
            return out
        self.peek_error("expected value")

    def ident(self, rest):
        for expected in rest:
            c = self.next_char()
            if c is None:
                self.error("EOF while parsing a value")
            if c != expected:
                self.error("expected ident")

    def seq(self):
        out = []
        first = True
        while True:
            c = self.whitespace()
            if c is None:
                self.peek_error("EOF while parsing a list")
            if c == 0x5D:  # ]
                return out
            if first:
                first = False
            elif c == 0x2C:  # ,
                self.i += 1
                c = self.whitespace()
                if c == 0x5D:
                    self.peek_error("trailing comma")
                if c is None:
                    self.peek_error("EOF while parsing a value")
            else:
                self.peek_error("expected `,` or `]`")
            out.append(self.value())

    def end_seq(self):
        c = self.whitespace()
        if c == 0x5D:
            self.i += 1
            return
        if c == 0x2C:
            self.i += 1
            if self.whitespace() == 0x5D:
                self.peek_error("trailing comma")
            self.peek_error("trailing characters")
        if c is not None:
            self.peek_error("trailing characters")
        self.peek_error("EOF while parsing a list")

    def map(self):
        out = {}
        first = True
        while True:
            c = self.whitespace()
            if c is None:
                self.peek_error("EOF while parsing an object")
            if c == 0x7D:  # }
                return out
            if first:
                first = False
                if c != 0x22:
                    self.peek_error("key must be a string")
            elif c == 0x2C:
                self.i += 1
                c = self.whitespace()
                if c == 0x7D:
                    self.peek_error("trailing comma")
                if c is None:
                    self.peek_error("EOF while parsing a value")
                if c != 0x22:
                    self.peek_error("key must be a string")
            else:
                self.peek_error("expected `,` or `}`")
            self.i += 1  # the key's opening quote
            key = self.string()
            c = self.whitespace()
            if c == 0x3A:  # :
                self.i += 1
            elif c is None:
                self.peek_error("EOF while parsing an object")
            else:
                self.peek_error("expected `:`")
            out[key] = self.value()

    def end_map(self):
        c = self.whitespace()
        if c == 0x7D:
            self.i += 1
            return
        if c == 0x2C:
            self.peek_error("trailing comma")
        if c is not None:
            self.peek_error("trailing characters")
        self.peek_error("EOF while parsing an object")

    # Strings.
    def string(self):
        start = self.i
        scratch = None
        while True:
            m = _STRING_STOP.search(self.b, self.i)
            if m is None:
                self.i = self.n
                self.error("EOF while parsing a string")
            self.i = m.start()
            c = self.b[self.i]
            if c == 0x22:
                if scratch is None:
                    raw = self.b[start:self.i]
                else:
                    scratch += self.b[start:self.i]
                    raw = bytes(scratch)
                self.i += 1
                try:
                    return raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    line, column = self._position(self.i)
                    raise _Syntax("invalid unicode code point", line, max(0, column - (len(raw) - e.start))) from None
            if c == 0x5C:
                if scratch is None:
                    scratch = bytearray()
                scratch += self.b[start:self.i]
                self.i += 1
                self.escape(scratch)
                start = self.i
            else:
                self.i += 1
                self.error("control character (\\u0000-\\u001F) found while parsing a string")

    def escape(self, scratch):
        c = self.next_char()
        if c is None:
            self.error("EOF while parsing a string")
        simple = {0x22: b'"', 0x5C: b"\\", 0x2F: b"/", 0x62: b"\b", 0x66: b"\f", 0x6E: b"\n", 0x72: b"\r", 0x74: b"\t"}
        if c in simple:
            scratch += simple[c]
        elif c == 0x75:  # u
            self.unicode_escape(scratch)
        else:
            self.error("invalid escape")

    def hex4(self):
        if self.n - self.i >= 4:
            quad = self.b[self.i:self.i + 4]
            self.i += 4
            if all(h in _HEX for h in quad):
                return (_HEX[quad[0]] << 12) | (_HEX[quad[1]] << 8) | (_HEX[quad[2]] << 4) | _HEX[quad[3]]
            self.error("invalid escape")
        self.i = self.n
        self.error("EOF while parsing a string")

    def peek_or_eof(self):
        c = self.peek()
        if c is None:
            self.error("EOF while parsing a string")
        return c

    def unicode_escape(self, scratch):
        n = self.hex4()
        if 0xDC00 <= n <= 0xDFFF:
            self.error("lone leading surrogate in hex escape")
        if n < 0xD800 or n > 0xDBFF:
            scratch += chr(n).encode("utf-8")
            return
        if self.peek_or_eof() == 0x5C:
            self.i += 1
        else:
            self.i += 1
            self.error("unexpected end of hex escape")
        if self.peek_or_eof() == 0x75:
            self.i += 1
        else:
            self.i += 1
            self.error("unexpected end of hex escape")
        n2 = self.hex4()
        if n2 < 0xDC00 or n2 > 0xDFFF:
            self.error("lone leading surrogate in hex escape")
        scratch += chr((((n - 0xD800) << 10) | (n2 - 0xDC00)) + 0x10000).encode("utf-8")

    # Numbers (serde_json without its `float_roundtrip` feature).
    def integer(self, positive):
        c = self.next_char()
        if c is None:
            self.error("EOF while parsing a value")
        if c == 0x30:  # 0
            if self.peek_or_null() in _DIGITS:
                self.peek_error("invalid number")
            return self.number(positive, 0)
        if c in _DIGITS:
            significand = c - 0x30
            while True:
                c = self.peek_or_null()
                if c in _DIGITS:
                    digit = c - 0x30
                    if _overflow(significand, digit, _U64_MAX):
                        return self.long_integer(positive, significand)
                    self.i += 1
                    significand = significand * 10 + digit
                else:
                    return self.number(positive, significand)
        self.error("invalid number")

    def number(self, positive, significand):
        c = self.peek_or_null()
        if c == 0x2E:  # .
            return self.decimal(positive, significand, 0)
        if c in (0x65, 0x45):  # e E
            return self.exponent(positive, significand, 0)
        if positive:
            return significand
        if 1 <= significand <= 1 << 63:
            return -significand
        return -float(significand)  # -0 and what does not fit an i64

    def decimal(self, positive, significand, exponent_before):
        self.i += 1
        after = 0
        while self.peek_or_null() in _DIGITS:
            digit = self.b[self.i] - 0x30
            if _overflow(significand, digit, _U64_MAX):
                return self.decimal_overflow(positive, significand, exponent_before + after)
            self.i += 1
            significand = significand * 10 + digit
            after -= 1
        if after == 0:
            if self.peek() is not None:
                self.peek_error("invalid number")
            self.peek_error("EOF while parsing a value")
        if self.peek_or_null() in (0x65, 0x45):
            return self.exponent(positive, significand, exponent_before + after)
        return self.from_parts(positive, significand, exponent_before + after)

    def exponent(self, positive, significand, starting):
        self.i += 1
        c = self.peek_or_null()
        positive_exp = True
        if c == 0x2B:
            self.i += 1
        elif c == 0x2D:
            self.i += 1
            positive_exp = False
        c = self.next_char()
        if c is None:
            self.error("EOF while parsing a value")
        if c not in _DIGITS:
            self.error("invalid number")
        exp = c - 0x30
        while self.peek_or_null() in _DIGITS:
            self.i += 1
            digit = self.b[self.i - 1] - 0x30
            if _overflow(exp, digit, _I32_MAX):
                return self.exponent_overflow(positive, significand == 0, positive_exp)
            exp = exp * 10 + digit
        final = starting + exp if positive_exp else starting - exp
        return self.from_parts(positive, significand, max(_I32_MIN, min(_I32_MAX, final)))

    def exponent_overflow(self, positive, zero_significand, positive_exp):
        if not zero_significand and positive_exp:
            self.error("number out of range")
        while self.peek_or_null() in _DIGITS:
            self.i += 1
        return 0.0 if positive else -0.0

    def long_integer(self, positive, significand):
        exponent = 0
        while True:
            c = self.peek_or_null()
            if c in _DIGITS:
                self.i += 1
                exponent += 1
            elif c == 0x2E:
                return self.decimal(positive, significand, exponent)
            elif c in (0x65, 0x45):
                return self.exponent(positive, significand, exponent)
            else:
                return self.from_parts(positive, significand, exponent)

    def decimal_overflow(self, positive, significand, exponent):
        while self.peek_or_null() in _DIGITS:
            self.i += 1
        if self.peek_or_null() in (0x65, 0x45):
            return self.exponent(positive, significand, exponent)
        return self.from_parts(positive, significand, exponent)

    def from_parts(self, positive, significand, exponent):
        f = float(significand)
        while True:
            a = abs(exponent)
            if a < len(_POW10):
                if exponent >= 0:
                    f *= _POW10[a]
                    if math.isinf(f):
                        self.error("number out of range")
                else:
                    f /= _POW10[a]
                break
            if f == 0.0:
                break
            if exponent >= 0:
                self.error("number out of range")
            f /= 1e308
            exponent += 308
        return f if positive else -f


class _Slow(Exception):
    """Raised by the fast path's hooks: let the serde_json port decide."""


def _reject_constant(_name):
    raise _Slow


def _parse_int(s):
    if len(s) <= 18:
        return -0.0 if s == "-0" else int(s)
    return _number(s)


def _parse_float(s):
    # Up to 15 significant digits and no exponent: serde_json's one multiplication or division
    # of exact operands is correctly rounded, as float() is.
    if len(s) <= 16 and "e" not in s and "E" not in s:
        return float(s)
    return _number(s)


def _number(s):
    try:
        return _Parser(s.encode("ascii")).value()
    except _Syntax:
        raise _Slow from None


def _parse_slow(body):
    try:
        return _Parser(body).document()
    except _Syntax as e:
        raise JSONError(str(e)) from None


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_reject_constant)


def loads(body):
    """Parses JSON bytes as serde_json does into a `Value`; raises `JSONError` with serde_json's
    message (`expected value at line 1 column 1`) for what it refuses."""
    if type(body) is not bytes:
        body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if b"\\u" in body or body.count(b"[") + body.count(b"{") >= 127:
        return _parse_slow(body)
    try:
        text = body.decode("utf-8")
        return _DECODER.decode(text)
    except (ValueError, _Slow, RecursionError):
        return _parse_slow(body)
