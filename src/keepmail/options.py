"""`opt`: a config field with its help text next to its type and default.

Kept apart from config.py so that packages can define their own config
sections (outbound/settings.py, abuse/settings.py, web/settings.py) which
config.py then gathers, without an import cycle.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def opt(default: Any, help: str, *, factory: bool = False) -> Any:
    """A dataclass field carrying its documentation in metadata["help"]."""
    if factory:
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})
