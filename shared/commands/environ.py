"""Where a command's settings come from: the environment, and a local.settings.json beside it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from shared.errors import SettingsError


def command_environ(settings: Path | None) -> dict[str, str]:
    """The process's environment, with a local.settings.json's Values where it has none."""
    environ = dict(os.environ)
    if settings is None:
        return environ
    try:
        values = json.loads(settings.read_text())["Values"]
    except (OSError, ValueError, KeyError) as exc:
        raise SettingsError(f"{settings}: not a local.settings.json with Values ({exc})") from None
    # The environment wins, as it does for the Functions host.
    return {**{k: str(v) for k, v in values.items()}, **environ}
