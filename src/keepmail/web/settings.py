"""The [web] section of keepmail.toml: console sessions, MTA-STS policy, metrics access.

Same style as keepmail.config: each field carries its help text. Until the
lead adds `web: WebSection` to Config, `settings_of` returns the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..options import opt


@dataclass
class WebSection:
    session_idle_minutes: float = opt(60.0, "Minutes of inactivity after which a console "
                                      "session ends.")
    session_max_hours: float = opt(12.0, "Hours after which a console session ends even "
                                   "when in use.")
    admin_totp: bool = opt(True, "Admins must use a second factor (TOTP app) before the "
                           "admin pages open. Turn off only on a test machine.")
    mta_sts_mode: str = opt("testing", 'MTA-STS policy mode served at /.well-known/'
                            'mta-sts.txt: "testing" first, "enforce" once reports are clean, '
                            '"none" to withdraw.')
    mta_sts_max_age: int = opt(604800, "Seconds senders may cache the MTA-STS policy.")
    metrics_token: str = opt("", "Bearer token allowing /metrics from other hosts "
                             "(loopback needs none; admins logged in need none).")


def settings_of(config: Any) -> WebSection:
    """The [web] section, or the defaults while Config has none."""
    section = getattr(config, "web", None)
    return section if isinstance(section, WebSection) else WebSection()
