"""Timers: the host calls the server's `on_timer` hook on the instance that set them, in order
with that instance's other calls."""

from . import _host
from ._error import Error

__all__ = ["after", "every", "cancel"]

# The longest delay or period the host sets a timer for: a year, in milliseconds.
MAX_DELAY_MS = 365 * 24 * 3600 * 1000


def _delay(value, what):
    ms = _host.ms(value, what, MAX_DELAY_MS + 1)
    if ms > MAX_DELAY_MS:
        raise Error("PIT-400", f"timer not set: the {what} is longer than a year")
    return ms


def _started(id):
    if id == 0:
        raise Error("PIT-500", "timer not set: this instance holds its maximum of live timers")
    return id


def after(delay, payload=b""):
    """Fires once after `delay` (seconds or a timedelta); returns the timer's id. Raises
    `PIT-500` when this instance already holds its maximum of live timers
    (`servers.<type>.max_timers`), `PIT-400` for a delay over a year."""
    ms = _delay(delay, "delay")
    return _started(_host.current().timer_start(ms, False, _host.as_bytes(payload, "payload")))


def every(period, payload=b""):
    """Fires every `period` (seconds or a timedelta) until cancelled; returns the timer's id. A
    tick that comes while the previous one still waits for the instance is dropped."""
    ms = _delay(period, "period")
    return _started(_host.current().timer_start(ms, True, _host.as_bytes(payload, "payload")))


def cancel(id):
    """Cancels a timer: it never fires afterwards. False if unknown or done."""
    return _host.current().timer_cancel(id)
