"""Budgets: how much an address may do, refilled with time (token buckets), and whose address it is.

Pure, with an injectable clock, so a test moves time by hand.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections.abc import Callable

__all__ = ["Budget", "TokenBucket", "is_loopback"]


class TokenBucket:
    """Allow ``rate`` events per second on average, and bursts of up to ``burst``.

    The bucket holds up to ``burst`` tokens and refills continuously at ``rate``
    tokens per second; each event takes one token, and an event that finds the
    bucket empty is refused.  ``clock`` is injectable so a test needs no sleep.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, cost: float = 1) -> bool:
        """Spend ``cost`` tokens if the bucket holds them (a message: 1; bytes: its size)."""
        self._refill()
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def ready(self, cost: float = 1) -> bool:
        """Would :meth:`take` succeed now?  Spends nothing."""
        self._refill()
        return self.tokens >= cost

    def empty(self) -> None:
        """Spend everything: the next event waits for the refill."""
        self._refill()
        self.tokens = 0.0

    def full(self) -> bool:
        """True when the bucket has refilled: forgetting it then changes nothing."""
        self._refill()
        return self.tokens >= self.burst


def is_loopback(address: str) -> bool:
    """True for this machine's own address as a client uses it (127.0.0.1, ::1), and for none at all.

    The other 127.x.y.z addresses also reach this machine, but they count as
    other machines: that is how the tests play a whole class on one computer.
    """
    if not address:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


@dataclasses.dataclass(eq=False)
class Budget:
    """What one address may still do: shared by every connection from it."""

    messages: TokenBucket | None
    renames: TokenBucket
    connects: TokenBucket | None
    data: TokenBucket | None = None           # bytes of chat text
    connections: int = 0
    refusals: int = 0                         # new connections refused since the last one admitted
    muted_until: float = 0.0                  # the teacher's mute (the clock's time): it outlives a reconnect

    def idle(self) -> bool:
        """Nothing left to remember: no connection, every bucket full, no mute running."""
        buckets = (self.messages, self.renames, self.connects, self.data)
        return (self.connections == 0 and self.muted_until <= self.renames.clock()
                and all(b is None or b.full() for b in buckets))
