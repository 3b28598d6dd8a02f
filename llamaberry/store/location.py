"""Where the history lives, and whether runs are saved at all."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HOME_ENV = "LLAMABERRY_HOME"
HISTORY_ENV = "LLAMABERRY_HISTORY"


def data_dir() -> Path:
    """Where llamaberry keeps its per-user data: $LLAMABERRY_HOME, else the platform's data dir."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "llamaberry"


def default_path() -> Path:
    """The history database file."""
    return data_dir() / "history.db"


def history_enabled() -> bool:
    """False when LLAMABERRY_HISTORY turns saving off (0, false, no, off)."""
    value = os.environ.get(HISTORY_ENV, "").strip().lower()
    return value not in ("0", "false", "no", "off")
