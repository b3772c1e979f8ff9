"""A token bucket for log lines, so a flood of knocks cannot flood the log. Time is passed in."""

from __future__ import annotations


class LogBudget:
    """Allows ``rate`` events per second with bursts of ``burst``; counts what it suppresses."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = 0.0
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """How many events were suppressed since the last call (for a summary line)."""
        count, self.suppressed = self.suppressed, 0
        return count
