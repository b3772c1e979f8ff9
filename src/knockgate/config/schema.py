"""Where knockgate looks for things by default: declared once, used by the CLI and the config
reader alike."""

from __future__ import annotations

DEFAULT_PATH = "/etc/knockgate/knockgate.toml"
DEFAULT_STATE_DIR = "/var/lib/knockgate"
