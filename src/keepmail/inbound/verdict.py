"""Verdicts: named rules with points and reasons, combined into one action.

Every check of the inbound pipeline (DESIGN.md, principle 4) adds Rules; the
sum of their points, compared with thresholds from the config, gives the
action. A rule may also force an action outright (a DMARC p=reject failure
is refused whatever else scored). The verdict travels with the message as an
X-Keepmail-Verdict header and into the flight recorder.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Action(enum.IntEnum):
    # Ordered by severity, so max() picks the strictest.
    INBOX = 0
    JUNK = 1
    QUARANTINE = 2
    TEMPFAIL = 3
    REJECT = 4


@dataclass(frozen=True)
class Rule:
    name: str
    points: float
    reason: str
    force: Action | None = None
    note: str = ""   # a short detail shown in the verdict header (e.g. a probability)


@dataclass(frozen=True)
class Thresholds:
    junk: float = 5.0
    quarantine: float = 10.0
    reject: float = 15.0


@dataclass
class Verdict:
    rules: list[Rule] = field(default_factory=list)
    action: Action = Action.INBOX
    score: float = 0.0

    def add(self, *rules: Rule) -> None:
        self.rules.extend(rules)

    def decide(self, thresholds: Thresholds) -> Verdict:
        rules = self.rules
        self.score = round(sum(rule.points for rule in rules), 2) if rules else 0.0
        action = _by_score(self.score, thresholds)
        for rule in rules:
            if rule.force is not None and rule.force > action:
                action = rule.force
        self.action = action
        return self

    def header_value(self) -> str:
        if not self.rules:
            return f"{self.action.name.lower()} score={self.score:g}"
        reasons = "; ".join(f"{r.name}={r.points:+g}" + (f" [{r.note}]" if r.note else "")
                            for r in self.rules if r.points or r.force or r.note)
        text = f"{self.action.name.lower()} score={self.score:g}"
        return f"{text} ({reasons})" if reasons else text

    def reasons(self) -> list[dict[str, object]]:
        return [{"rule": r.name, "points": r.points, "reason": r.reason,
                 **({"force": r.force.name.lower()} if r.force else {})} for r in self.rules]


def _by_score(score: float, thresholds: Thresholds) -> Action:
    if score >= thresholds.reject:
        return Action.REJECT
    if score >= thresholds.quarantine:
        return Action.QUARANTINE
    if score >= thresholds.junk:
        return Action.JUNK
    return Action.INBOX
