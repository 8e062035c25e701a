"""Public API of the content classifier: org-wide model, per-user adjustment, reputation.

``Classifier.score`` turns raw message bytes into a calibrated spam
probability with the features that pushed it there; ``learn`` takes a label
(from the admin, a user's "this is spam / not spam", or the TREC runner);
``save`` writes the model crash-safely (persist.py).

Who learns what:

* ``learn(..., user=None)`` - an org-level judgement (admin, training run):
  updates the org model and the reputation counts.
* ``learn(..., user="alice")`` - one user's judgement: updates alice's bounded
  adjustment model, which only ever shifts alice's own scores (by at most
  ``USER_MARGIN_CAP`` logits).  A user's *spam* report also trains the org
  model: the worst it can do is junk mail for others, never let spam through;
  a user's *ham* report does not, so one user cannot whitelist spam for all.

Reputation: spam/ham counts per envelope sender address, sending domain and
client /24 network, learned from org-level history, enter the model as
bucketed tokens (``rep:dom:r3:n4`` = mostly spam, 8-15 messages seen) whose
weights are learned like any other feature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import features as feat
from .model import Model, UserModel, sigmoid
from .persist import ModelState, dump, load_with_recovery, save_atomic

REPUTATION_MAX_KEYS = 200_000
REASONS = 8


@dataclass
class SpamScore:
    probability: float                                   # calibrated 0..1, higher = spam
    reasons: list[tuple[str, float]] = field(default_factory=list)  # feature, contribution
    logit: float = 0.0                                   # log-odds; finer than probability


class Reputation:
    """Bounded spam/ham counters per sender address, sender domain and client /24."""

    def __init__(self, counts: dict[str, list[int]] | None = None,
                 max_keys: int = REPUTATION_MAX_KEYS) -> None:
        self.counts = counts if counts is not None else {}
        self.max_keys = max_keys

    @staticmethod
    def keys(f: feat.Features) -> list[tuple[str, str]]:
        return [("addr", f.sender), ("dom", f.sender_domain), ("net", f.client_net)]

    def tokens(self, f: feat.Features) -> list[str]:
        out = []
        for kind, key in self.keys(f):
            if not key:
                out.append(f"rep:{kind}:unknown")
                continue
            spam, ham = self.counts.get(f"{kind}:{key}", (0, 0))
            n = spam + ham
            if n == 0:
                out.append(f"rep:{kind}:new")
            else:
                # Smoothed spam share in 5 bins and a log count: generalizes across senders.
                share = int(5 * (spam + 0.5) / (n + 1))
                out.append(f"rep:{kind}:r{min(share, 4)}:n{min(n.bit_length(), 5)}")
        return out

    def update(self, f: feat.Features, is_spam: bool) -> None:
        for kind, key in self.keys(f):
            if key:
                pair = self.counts.setdefault(f"{kind}:{key}", [0, 0])
                pair[0 if is_spam else 1] += 1
        if len(self.counts) > self.max_keys:
            self._shrink()

    def _shrink(self) -> None:
        # Forget the least-seen half: one-off senders carry the least evidence.
        ranked = sorted(self.counts.items(), key=lambda kv: kv[1][0] + kv[1][1], reverse=True)
        self.counts = dict(ranked[: self.max_keys // 2])


class Classifier:
    """Org-wide online model + per-user adjustments + reputation, saved as one file."""

    def __init__(self, state: ModelState | None = None, path: Path | None = None) -> None:
        state = state or ModelState(Model())
        self.model = state.model
        self.users: dict[str, UserModel] = state.users
        self.reputation = Reputation(state.reputation)
        self.path = path
        self.source = state.source
        self.load_errors: list[str] = []

    @classmethod
    def open(cls, path: Path) -> Classifier:
        """The model at `path`; its backup, the starter model or an empty one if missing/corrupt."""
        errors: list[str] = []
        state = load_with_recovery(Path(path), errors=errors)
        clf = cls(state, Path(path))
        clf.load_errors = errors
        return clf

    @classmethod
    def starter(cls) -> Classifier:
        """The shipped starter model (no file of its own: save() needs a path)."""
        return cls(load_with_recovery(None))

    @classmethod
    def empty(cls, path: Path | None = None, bits: int = feat.DEFAULT_BITS) -> Classifier:
        """A model that knows nothing (cold start, e.g. for honest TREC runs)."""
        return cls(ModelState(Model(bits)), path)

    # -- scoring --------------------------------------------------------------
    def features(self, raw: bytes, *, auth: Mapping[str, str] | None = None,
                 sender: str | None = None, client_ip: str | None = None,
                 names: bool = False) -> feat.Features:
        if client_ip is None:
            client_ip = feat.received_client_ip(raw) or None
        f = feat.extract(raw, bits=self.model.bits, auth=auth, sender=sender,
                         client_ip=client_ip, names=names)
        known = set(f.ids)
        for token in self.reputation.tokens(f):
            i = feat.token_id(token, self.model.bits)
            if i not in known:
                known.add(i)
                f.ids.append(i)
            if names:
                f.names[i] = token
        return f

    def score(self, raw: bytes, *, user: str | None = None,
              auth: Mapping[str, str] | None = None, sender: str | None = None,
              client_ip: str | None = None, reasons: int = REASONS) -> SpamScore:
        f = self.features(raw, auth=auth, sender=sender, client_ip=client_ip,
                          names=reasons > 0)
        margin = self.model.margin(f.ids)
        umodel = self.users.get(user) if user else None
        if umodel is not None:
            margin += umodel.margin(f.ids)
        top = self._reasons(f, umodel, reasons) if reasons > 0 else []
        return SpamScore(sigmoid(margin), top, margin)

    def _reasons(self, f: feat.Features, umodel: UserModel | None,
                 k: int) -> list[tuple[str, float]]:
        """The k named features with the largest contributions (either sign).

        Only string tokens have names: character 4-grams and word pairs count in
        the score, but "heap" explains nothing the word "cheap" does not.
        """
        names = f.names
        contrib = self.model.contributions(names, len(f.ids))
        if umodel is not None and f.ids:
            scale = 1.0 / math.sqrt(len(f.ids))
            get = umodel.weights.get
            for i in names:
                contrib[i] += get(i, 0.0) * scale
        named = [(names[i], c) for i, c in contrib.items() if c]
        named.sort(key=lambda nc: abs(nc[1]), reverse=True)
        return [(name, round(c, 4)) for name, c in named[:k]]

    # -- learning -------------------------------------------------------------
    def learn(self, raw: bytes, is_spam: bool, *, user: str | None = None,
              auth: Mapping[str, str] | None = None, sender: str | None = None,
              client_ip: str | None = None) -> None:
        f = self.features(raw, auth=auth, sender=sender, client_ip=client_ip)
        self.learn_features(f, is_spam, user=user)

    def learn_features(self, f: feat.Features, is_spam: bool, *, user: str | None = None) -> None:
        """Learn from features already extracted (the TREC runner scores then learns)."""
        org_margin = self.model.margin(f.ids)
        if user:
            umodel = self.users.setdefault(user, UserModel())
            umodel.learn(f.ids, is_spam, org_margin)
            if not is_spam:
                return
        self.model.learn(f.ids, is_spam, org_margin)
        if not user:
            self.reputation.update(f, is_spam)

    # -- persistence ----------------------------------------------------------
    def state(self) -> ModelState:
        return ModelState(self.model, self.users, self.reputation.counts, self.source)

    def save(self, path: Path | None = None) -> None:
        """Write the model crash-safely to `path` (default: where it was opened)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no model path to save to")
        save_atomic(target, dump(self.state()))
        self.path = target
