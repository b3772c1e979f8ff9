"""The configuration the README shows must be one knockgate accepts."""

import re
from pathlib import Path

from knockgate.config.load import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_door_example_is_valid():
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    door_block = next(block for block in blocks if "[[door]]" in block)
    config = parse_config(door_block, "README.md")
    (door,) = config.doors
    assert door.engine == "kernel" and door.penalty == 60
    assert door.command and door.stop_command
