"""knockgate's configuration: TOML in, a validated and frozen Config out.

- schema.py: every option's key, help and default (declared once), and the value types;
- load.py: load_config / parse_config, the validation;
- files.py: the files a configuration points at (secrets, one-time sequences, access.conf);
- checks.py: checks across doors and SPA;
- describe.py: the configuration in words, for `knockgate check`.

Deliberately empty of code: importing schema (as the CLI does for DEFAULT_PATH) must not import
the parser.
"""
