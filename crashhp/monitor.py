"""The uevent monitor in the service's selector: opened before the first kernel read,
drained in bounded batches, rebuilt after an overflow, replaced without a gap."""

from __future__ import annotations

import contextlib
import selectors
from collections.abc import Callable
from dataclasses import dataclass

from crashhp.config import Config
from crashhp.model import Uevent
from crashhp.uevents import MonitorOverflow, PyudevSource, UeventSource

DRAIN_LIMIT = 4096  # events per loop turn, so timers and signals are never starved
OLD_SOURCE_DRAINS = 64  # a replaced monitor is read this many times DRAIN_LIMIT at most

SourceFactory = Callable[[Config], UeventSource]


def default_source(config: Config) -> UeventSource:
    return PyudevSource(config.events.source.value, config.events.receive_buffer_bytes)


@dataclass(frozen=True, slots=True)
class Batch:
    events: tuple[Uevent, ...] = ()
    ignored: int = 0
    lost: str | None = None  # events were lost (why); the monitor has been rebuilt


class Monitor:
    def __init__(
        self,
        factory: SourceFactory,
        selector: selectors.BaseSelector,
        warn: Callable[[str], None],
    ) -> None:
        self._factory = factory
        self._selector = selector
        self._warn = warn  # the receive buffer could not be raised
        self._source: UeventSource | None = None

    def open(self, config: Config) -> None:
        self._source = self._factory(config)
        self._selector.register(self._source.fileno(), selectors.EVENT_READ, "uevents")
        buffer_error = getattr(self._source, "buffer_error", None)
        if buffer_error:
            self._warn(buffer_error)

    def close(self) -> None:
        if self._source is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._source.fileno())
            self._source.close()
            self._source = None

    def read(self, config: Config) -> Batch:
        """What is queued now (up to DRAIN_LIMIT); after an overflow, a rebuilt monitor."""
        if self._source is None:
            return Batch()
        try:
            events, ignored = self._source.drain(DRAIN_LIMIT)
        except MonitorOverflow as exc:
            why = f"receive buffer overflow ({exc})"
        except OSError as exc:
            why = f"monitor error: {exc.strerror or exc}"
        else:
            return Batch(tuple(events), ignored)
        self.close()
        self.open(config)
        return Batch(lost=why)

    def replace(self, config: Config) -> list[Batch]:
        """A new [events] section: the new monitor is open before the old one is drained
        and closed, so that no event falls between them (one both read is a harmless
        duplicate: events are hints)."""
        old = self._source
        if old is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(old.fileno())
        self._source = None
        self.open(config)
        if old is None:
            return []
        batches: list[Batch] = []
        try:
            for _ in range(OLD_SOURCE_DRAINS):
                events, ignored = old.drain(DRAIN_LIMIT)
                if not events and not ignored:
                    return batches
                batches.append(Batch(tuple(events), ignored))
            why = "the old monitor kept receiving while it was drained"
        except MonitorOverflow as exc:
            why = f"receive buffer overflow ({exc})"
        except OSError as exc:
            why = f"monitor error: {exc.strerror or exc}"
        finally:
            old.close()
        return [*batches, Batch(lost=why)]
