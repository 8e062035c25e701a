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
  Both also count towards the sender's reputation, a bounded number of times
  per user and sender (see ``Reputation``).

Reputation: spam/ham counts per envelope sender address, sending domain and
client /24 network, learned from the organization's history - admin training
and what users junked, released from quarantine or replied to, each user's
contribution to one sender capped (``Reputation``) - enter the model as
bucketed tokens (``rep:dom:r3:n4`` = mostly spam, 8-15 messages seen) whose
weights are learned like any other feature.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import features as feat
from .model import Model, UserModel, sigmoid
from .persist import ModelState, dump, load_with_recovery, save_atomic

REPUTATION_MAX_KEYS = 200_000
USER_SPAM_VOTES = 3     # most spam judgements one user adds to one sender/domain/network
USER_HAM_VOTES = 1      # most ham judgements one user adds (whitewashing needs many users)
MAX_VOTERS = 64         # distinct users remembered per key; later ones are not counted
REASONS = 8


@dataclass
class SpamScore:
    probability: float                                   # calibrated 0..1, higher = spam
    reasons: list[tuple[str, float]] = field(default_factory=list)  # feature, contribution
    logit: float = 0.0                                   # log-odds; finer than probability


class Reputation:
    """Bounded spam/ham counters per sender address, sender domain and client /24.

    ``counts[key] = [spam, ham]`` adds up the organization's history: every
    org-level judgement (admin, training run) counts once, and users' own
    judgements (Junk moves, quarantine releases, replies) count too, but each
    user only so far: ``voters[key][user] = [spam, ham]`` remembers what that
    user already contributed to that key, capped at ``USER_SPAM_VOTES`` /
    ``USER_HAM_VOTES``.  So one account (a careless user or a spammer's
    accomplice) adds at most one ham to a sender however often it releases or
    replies to its mail: a known spammer stays known, and a new sender moves
    from "new" to the middle bin (r1), not to "good", until several distinct
    users vouch for it.  A user who changes their mind (out of Junk after into
    Junk) withdraws one earlier vote before casting the new one.
    """

    def __init__(self, counts: dict[str, list[int]] | None = None,
                 voters: dict[str, dict[str, list[int]]] | None = None,
                 max_keys: int = REPUTATION_MAX_KEYS) -> None:
        self.counts = counts if counts is not None else {}
        self.voters = voters if voters is not None else {}
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

    def update(self, f: feat.Features, is_spam: bool, user: str | None = None) -> None:
        """Count one judgement of `f`'s sender: org-level (user None) or one user's."""
        for kind, key in self.keys(f):
            if key:
                self.count(f"{kind}:{key}", is_spam, user)
        if len(self.counts) > self.max_keys:
            self._shrink()

    def count(self, key: str, is_spam: bool, user: str | None = None) -> None:
        own, other = (0, 1) if is_spam else (1, 0)
        if user is None:
            self.counts.setdefault(key, [0, 0])[own] += 1
            return
        votes = self.voters.get(key)
        if votes is None:
            votes = self.voters[key] = {}
        mine = votes.get(user)
        if mine is None:
            if len(votes) >= MAX_VOTERS:
                return          # enough distinct users on record for this key
            mine = votes[user] = [0, 0]
        pair = self.counts.setdefault(key, [0, 0])
        if mine[other] > 0:     # a change of mind: withdraw one earlier vote first
            mine[other] -= 1
            pair[other] = max(0, pair[other] - 1)
        if mine[own] < (USER_SPAM_VOTES if is_spam else USER_HAM_VOTES):
            mine[own] += 1
            pair[own] += 1

    def _shrink(self) -> None:
        # Forget the least-seen half: one-off senders carry the least evidence.
        ranked = sorted(self.counts.items(), key=lambda kv: kv[1][0] + kv[1][1], reverse=True)
        self.counts = dict(ranked[: self.max_keys // 2])
        self.voters = {k: v for k, v in self.voters.items() if k in self.counts}


class Classifier:
    """Org-wide online model + per-user adjustments + reputation, saved as one file."""

    def __init__(self, state: ModelState | None = None, path: Path | None = None) -> None:
        state = state or ModelState(Model())
        self.model = state.model
        self.users: dict[str, UserModel] = state.users
        self.reputation = Reputation(state.reputation, state.voters)
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
        return feat.extract(raw, bits=self.model.bits, auth=auth, sender=sender,
                            client_ip=client_ip, names=names, received_ip=client_ip is None,
                            reputation=self.reputation.tokens)

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
        if not names or len(f.ids) == 0:
            return []
        scale = 1.0 / math.sqrt(len(f.ids))
        ids = np.fromiter(names, np.int64, len(names))
        values = self.model.weights[ids].astype(np.float64)
        if umodel is not None and umodel.weights:
            # The user's weights are scaled like the org's: add them before scaling.
            get = umodel.weights.get
            values += np.fromiter(map(get, ids.tolist(), itertools.repeat(0.0)),
                                  np.float64, len(ids))
        # Largest |contribution| first; ties broken by value, then id (distinct).
        order = np.lexsort((ids, values, np.abs(values)))[: -k - 1: -1]
        return [(names[i], round(v * scale, 4))
                for v, i in zip(values[order].tolist(), ids[order].tolist(), strict=True) if v]

    # -- learning -------------------------------------------------------------
    def learn(self, raw: bytes, is_spam: bool, *, user: str | None = None,
              auth: Mapping[str, str] | None = None, sender: str | None = None,
              client_ip: str | None = None) -> None:
        f = self.features(raw, auth=auth, sender=sender, client_ip=client_ip)
        self.learn_features(f, is_spam, user=user)

    def learn_features(self, f: feat.Features, is_spam: bool, *, user: str | None = None,
                       margin: float | None = None) -> None:
        """Learn from features already extracted (the TREC runner scores then learns).

        `margin`: the org model's margin of `f`, when the caller has just computed it.
        """
        org_margin = self.model.margin(f.ids) if margin is None else margin
        # Reputation counts what the whole organization did, users included, with
        # each user's share bounded (Reputation.count).
        self.reputation.update(f, is_spam, user or None)
        if user:
            umodel = self.users.setdefault(user, UserModel())
            umodel.learn(f.ids, is_spam, org_margin)
            if not is_spam:
                return
        self.model.learn(f.ids, is_spam, org_margin)

    def learn_reply(self, user: str, address: str) -> None:
        """`user` wrote to `address` (a reply or new mail): one bounded ham vote for
        that correspondent's address and domain reputation, nothing else.

        Meant for the submission path: an account that writes to someone vouches for
        them, the strongest "I want this mail" signal there is.
        """
        f = feat.Features(ids=[])
        feat.set_sender(f, address)
        if f.sender and user:
            self.reputation.update(f, False, user)

    # -- persistence ----------------------------------------------------------
    def state(self) -> ModelState:
        return ModelState(self.model, self.users, self.reputation.counts, self.source,
                          self.reputation.voters)

    def save(self, path: Path | None = None) -> None:
        """Write the model crash-safely to `path` (default: where it was opened)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no model path to save to")
        save_atomic(target, dump(self.state()))
        self.path = target
