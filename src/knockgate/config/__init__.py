"""knockgate's configuration: TOML in, a validated and frozen Config out.

- schema.py: every option's key, help and default (declared once), and the value types;
- load.py: load_config / parse_config, the validation;
- files.py: the files a configuration points at (secrets, one-time sequences, access.conf);
- checks.py: checks across doors and SPA;
- describe.py: the configuration in words, for `knockgate check`.

Nothing else lives here: the CLI imports DEFAULT_PATH from this module while it builds its
parser, and `knockgate knock` must not pay for the schema, let alone the parser.
"""

DEFAULT_PATH = "/etc/knockgate/knockgate.toml"
DEFAULT_STATE_DIR = "/var/lib/knockgate"
