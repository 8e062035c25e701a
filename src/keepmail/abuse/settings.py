"""The [abuse] section of keepmail.toml: throttles, outbound limits, detection.

Same style as keepmail.config: each field carries its help text next to its
type and default, so the commented file `keepmail init` writes documents
itself. Limits are on by default (DESIGN.md principle 6); DNS block-list
self-checks are off by default (principle 7: nothing contacts a third party
unless the admin says so).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import opt


@dataclass
class AbuseSection:
    # -- authentication throttling --------------------------------------------------
    auth_free_failures_pair: int = opt(3, "Wrong passwords for one account from one IP "
                                       "before each further try must wait (1 s, 2 s, 4 s, ...).")
    auth_block_failures_pair: int = opt(10, "Wrong passwords for one account from one IP "
                                        "that block that IP for that account.")
    auth_free_failures_ip: int = opt(10, "Wrong passwords from one IP (any account) before "
                                     "its tries must wait.")
    auth_block_failures_ip: int = opt(40, "Wrong passwords from one IP (any account) that "
                                      "block the IP for every account it does not know.")
    auth_block_minutes: float = opt(15.0, "First block length in minutes; doubles at each "
                                    "repeat, up to auth_max_block_hours.")
    auth_max_block_hours: float = opt(24.0, "Longest block, in hours.")
    auth_account_burst: int = opt(5, "Wrong-password tries an account accepts at once from "
                                  "IPs its user never logged in from (all such IPs together).")
    auth_account_per_hour: int = opt(10, "Then, tries per hour for that account from "
                                     "unfamiliar IPs. The user's usual IPs are never slowed "
                                     "by this, so an attacker cannot lock the user out.")
    auth_memory_days: float = opt(90.0, "Days an IP stays 'usual' for a user after their last "
                                  "successful login from it.")
    # -- outbound limits (on by default) --------------------------------------------------
    max_messages_per_hour: int = opt(300, "Messages with outside recipients one account may "
                                     "send per hour (0: no limit). Overridable per account or "
                                     "domain with `keepmail abuse limits`.")
    max_messages_per_day: int = opt(1500, "Messages with outside recipients per account per "
                                    "day (0: no limit).")
    max_recipients_per_message: int = opt(250, "Outside recipients in one message (0: no "
                                          "limit).")
    max_new_recipients_per_day: int = opt(500, "Outside recipients an account never wrote to "
                                          "or heard from before, per day (0: no limit).")
    # -- hacked-account detection ----------------------------------------------------------
    detect: bool = opt(True, "Watch each account's sending behaviour and hold its outgoing "
                       "mail when it looks hijacked (new network, new mail program, bursts "
                       "of first-time recipients, bounces, spammy content).")
    hold_score: float = opt(6.0, "Suspicion score at which an account's outgoing mail is held "
                            "for review (lower: stricter).")
    held_message_cap: int = opt(500, "Messages a held account may still queue (they are kept, "
                                "not sent); beyond this its submissions are refused with 4xx.")
    alert_admin_inbox: bool = opt(True, "Also put alerts into the Inbox of every admin "
                                  "account (the console shows them either way).")
    alert_user_inbox: bool = opt(True, "Tell the user, in their Inbox, when their outgoing "
                                 "mail is held.")
    # -- DNS block-list self-check (off by default) -------------------------------------
    dnsbl_zones: list[str] = opt(list, 'DNS block lists to check this server\'s IPs against, '
                                 'e.g. ["zen.spamhaus.org"]; empty: no checks (nothing is '
                                 "sent to a third party).", factory=True)
    dbl_zones: list[str] = opt(list, "Domain block lists to check our mail domains against, "
                               'e.g. ["dbl.spamhaus.org"]; empty: none.', factory=True)
    dnsbl_addresses: list[str] = opt(list, "Public IPs of this server to check; empty: none.",
                                     factory=True)
    dnsbl_interval_hours: float = opt(6.0, "Hours between two block-list checks.")
