"""Clients: knock sequences, SPA and fwknop packets, and the profiles `knockgate open` reads.

``DEFAULT_PROFILES`` lives here, not in profiles.py, so that the CLI's parser can show it
without importing the profile reader (every subcommand builds the whole parser).
"""

DEFAULT_PROFILES = "~/.config/knockgate/client.toml"
