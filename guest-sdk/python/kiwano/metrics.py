"""A server type's own metrics, exported with the host's (Prometheus text at `/metrics`).

Defined once, at module level, in the idiom of prometheus_client; recorded anywhere::

    from kiwano import metrics

    HITS = metrics.counter("hits", "Hits by color", labels=("color",))
    SIZE = metrics.histogram("size", "Sizes", labels=("kind",), buckets=(1, 10, 100))

    HITS.labels("red").inc()          # or .labels(color="red"), .inc(2)
    SIZE.labels("small").observe(3)

A metric declares itself through the host on first use and keeps the id the host gives it (the
same for every instance); `Server.init` also declares every metric defined so far, before the
`on_init` hook, so a spec the host refuses fails the instance's init with the host's error.

The host checks names, labels and values, and a recording it refuses raises `kiwano.Error` with
its code and message (the SDK does not check them first: a Python, JavaScript or Rust guest gets
the same answer). Only Python's own mistakes (a label keyword that is not a label name, a value
that is not a number) are Python errors. It is exported as `kiwano_guest_<name>` (a counter's
name ends in `_total`), with the labels `server_type` and `game` added by the host.
"""

from . import _host

__all__ = ["counter", "gauge", "histogram", "Counter", "Gauge", "Histogram"]

# Every metric defined, in order: `Server.init` declares them all.
_defined = []


def _names(labels):
    # A single label name is a common slip for a tuple of one: do not iterate its characters.
    if isinstance(labels, str):
        return (labels,)
    names = tuple(labels)
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"a label name is a str, not {type(n).__name__}")
    return names


class _Metric:
    """What every kind of metric shares: its spec, its id in this instance, `labels`."""

    kind = None

    def __init__(self, name, help, labels=(), buckets=()):
        if not isinstance(name, str):
            raise TypeError(f"a metric name is a str, not {type(name).__name__}")
        if not isinstance(help, str):
            raise TypeError(f"a metric's help is a str, not {type(help).__name__}")
        #: The name, as declared (exported as `kiwano_guest_<name>`).
        self.name = name
        #: The `# HELP` text.
        self.help = help
        #: The label names, in order.
        self.labelnames = _names(labels)
        #: A histogram's bucket upper bounds (empty: the host's defaults).
        self.buckets = tuple(float(b) for b in buckets)
        # (host, id): the id the host gave, and which host (in tests, `testing.reset()` starts
        # a new one).
        self._declared = None
        _defined.append(self)

    def _id(self):
        host = _host.current()
        declared = self._declared
        if declared is not None and declared[0] is host:
            return host, declared[1]
        id = host.metric_declare(self.name, self.help, self.kind, list(self.labelnames), list(self.buckets))
        self._declared = (host, id)
        return host, id

    def _record(self, op, values, value):
        value = float(value)
        host, id = self._id()
        getattr(host, op)(id, list(values), value)

    def labels(self, *values, **named):
        """The series of these label values: by position (`labels("red")`) or by name
        (`labels(color="red")`, any order). Values are turned into strings. The host checks their
        number when a value is recorded; a keyword that is not a label name is a `ValueError`."""
        if named:
            if values:
                raise TypeError("give label values by position or by name, not both")
            unknown = [k for k in named if k not in self.labelnames]
            missing = [n for n in self.labelnames if n not in named]
            if unknown or missing:
                raise ValueError(
                    f"metric {self.name!r} has labels {list(self.labelnames)}: "
                    f"got {sorted(named)}"
                )
            values = tuple(named[n] for n in self.labelnames)
        return self._Child(self, tuple(str(v) for v in values))

    def __repr__(self):
        return f"<kiwano.metrics.{type(self).__name__} {self.name!r} labels={list(self.labelnames)}>"


class _Series:
    __slots__ = ("_metric", "_values")

    def __init__(self, metric, values):
        self._metric = metric
        self._values = values

    def __repr__(self):
        return f"<series of {self._metric.name!r} {list(self._values)}>"


class _CounterSeries(_Series):
    __slots__ = ()

    def inc(self, amount=1):
        """Adds `amount` (at least 0) to this series."""
        self._metric._record("metric_add", self._values, amount)


class _GaugeSeries(_Series):
    __slots__ = ()

    def set(self, value):
        """Sets this series to `value`."""
        self._metric._record("metric_set", self._values, value)

    def inc(self, amount=1):
        """Adds `amount` to this series."""
        self._metric._record("metric_add", self._values, amount)

    def dec(self, amount=1):
        """Subtracts `amount` from this series."""
        self._metric._record("metric_add", self._values, -float(amount))


class _HistogramSeries(_Series):
    __slots__ = ()

    def observe(self, amount):
        """Observes `amount` into this series."""
        self._metric._record("metric_observe", self._values, amount)


class Counter(_Metric):
    """A value that only goes up. `inc(amount=1)` without labels, `labels(...).inc(amount=1)`
    with."""

    kind = "counter"
    _Child = _CounterSeries

    def inc(self, amount=1):
        """Adds `amount` (at least 0) to the series without label values."""
        self._record("metric_add", (), amount)


class Gauge(_Metric):
    """A value that goes up and down: `set(value)`, `inc(amount=1)`, `dec(amount=1)` (on
    `labels(...)` for a gauge with labels)."""

    kind = "gauge"
    _Child = _GaugeSeries

    def set(self, value):
        """Sets the series without label values to `value`."""
        self._record("metric_set", (), value)

    def inc(self, amount=1):
        """Adds `amount` to the series without label values."""
        self._record("metric_add", (), amount)

    def dec(self, amount=1):
        """Subtracts `amount` from the series without label values."""
        self._record("metric_add", (), -float(amount))


class Histogram(_Metric):
    """Observations counted into buckets, with their count and sum: `observe(amount)` (on
    `labels(...)` for a histogram with labels)."""

    kind = "histogram"
    _Child = _HistogramSeries

    def observe(self, amount):
        """Observes `amount` into the series without label values."""
        self._record("metric_observe", (), amount)


def counter(name, help, labels=()):
    """Defines a counter: `name` (`[a-z][a-z0-9_]*`; exported with `_total` appended when
    missing), its help text and its label names."""
    return Counter(name, help, labels)


def gauge(name, help, labels=()):
    """Defines a gauge."""
    return Gauge(name, help, labels)


def histogram(name, help, labels=(), buckets=()):
    """Defines a histogram; `buckets` are the upper bounds, increasing (empty: the Prometheus
    defaults, 0.005 to 10)."""
    return Histogram(name, help, labels, buckets)


def _declare_all():
    """Declares every metric defined so far (`Server.init` calls it before the `on_init` hook)."""
    for m in list(_defined):
        m._id()
