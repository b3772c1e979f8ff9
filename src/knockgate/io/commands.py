"""The only place knockgate starts a process: argv lists, no shell, a timeout, failures logged."""

from __future__ import annotations

import asyncio
import logging
import subprocess

log = logging.getLogger("knockgate.command")


async def run_command(argv: tuple[str, ...], timeout: float, context: str,
                      user: str | None = None, group: str | None = None) -> int | None:
    """Run ``argv`` (as ``user``/``group`` if given); return its exit status, or None if it
    could not start or timed out."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=group,
        )
    except (OSError, KeyError) as exc:  # KeyError: no such user or group
        log.error("%s: cannot start %s: %s", context, argv[0],
                  getattr(exc, "strerror", None) or exc)
        return None
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        log.error("%s: %s killed after %gs timeout", context, argv[0], timeout)
        return None
    text = output.decode(errors="replace").strip()
    if process.returncode == 0:
        log.info("%s: %s exited 0%s", context, argv[0], f": {text[:200]}" if text else "")
    else:
        log.error("%s: %s failed with status %s%s", context, argv[0], process.returncode,
                  f": {text[:200]}" if text else "")
    return process.returncode
