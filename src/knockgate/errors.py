"""One exception hierarchy for knockgate; cli.py turns these into exit codes."""

from __future__ import annotations


class KnockgateError(Exception):
    """Base of every error knockgate raises on purpose."""


class ConfigError(KnockgateError):
    """A configuration file is wrong. The message names FILE:LINE: and a fix."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 hint: str | None = None) -> None:
        self.path = path
        self.line = line
        self.hint = hint
        self.reason = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        text = f"{where}{self.reason}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class FrameError(ConfigError):
    """A knock frame such as 'tcp:7000:s' does not parse."""


class FirewallError(KnockgateError):
    """nftables refused a command or is not available."""


class CaptureError(KnockgateError):
    """The packet capture could not be set up."""


class CommandError(KnockgateError):
    """A configured command could not be started."""


class InvalidMessage(KnockgateError):
    """An SPA packet was rejected. Deliberately opaque: the reason is kept for debug logs only."""

    def __init__(self, reason: str = "invalid") -> None:
        self.reason = reason
        super().__init__("invalid message")
