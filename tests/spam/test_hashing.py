"""The numpy hashing of 4-grams and word pairs, and the numpy model arithmetic, give
exactly what the plain-Python definitions give (saved models depend on the ids)."""

from __future__ import annotations

import math
import zlib
from array import array

import numpy as np
import pytest

from keepmail.spam import features, model
from keepmail.spam.classifier import Classifier

from .conftest import HAMMY, SPAMMY, make_mail

PRIME = features.table_prime(features.DEFAULT_BITS)


def reference_grams(text: str) -> set[int]:
    """Every 4-byte window of the folded text, read little-endian, one at a time."""
    blob = " ".join(text[:features.GRAM_BYTES].lower().split()).encode("utf-8", "replace")
    blob = blob[:features.GRAM_BYTES]
    return {int.from_bytes(blob[i:i + 4], "little") for i in range(len(blob) - 3)}


def reference_osb(words: list[str]) -> set[int]:
    crcs = [zlib.crc32(w.encode("utf-8", "surrogatepass")) for w in words]
    return {(crcs[i] * 0x01000193 ^ crcs[i + d] * (0x9E3779B1 + 2 * d)) % PRIME
            for d in range(1, features.OSB_WINDOW + 1) for i in range(len(crcs) - d)}


GRAM_TEXTS = ["", "a", "ab", "abc", "abcd", "abcde", "abcdefgh", "  a  b  ", "Grüße, €100!",
              "日本語のテキスト", "\udcff broken surrogate", "x" * 5000, "word " * 100_000,
              "ÄÖÜ" * 2000]


@pytest.mark.parametrize("text", GRAM_TEXTS, ids=range(len(GRAM_TEXTS)))
def test_gram_codes_equal_reference(text: str) -> None:
    assert features._grams(text) == reference_grams(text)
    codes = features._gram_codes(features._gram_blob(text))
    assert len(codes) == max(0, len(features._gram_blob(text)) - 3)   # each window once
    assert len(features._gram_blob(text)) <= features.GRAM_BYTES       # huge input bounded


@pytest.mark.parametrize("n", range(13))
def test_gram_codes_every_length(n: int) -> None:
    text = "".join(chr(0x61 + (i * 7) % 26) for i in range(n))
    assert features._grams(text) == reference_grams(text)


WORD_LISTS = [[], ["one"], ["one", "two"], ["a", "b", "c"], ["a", "b", "c", "d", "e", "f"],
              ["grüße", "日本", "\udcff", ""], ["same"] * 10,
              [f"w{i}" for i in range(features.OSB_WORDS)]]


@pytest.mark.parametrize("words", WORD_LISTS, ids=range(len(WORD_LISTS)))
def test_osb_ids_equal_reference(words: list[str]) -> None:
    assert features._osb(words, features.DEFAULT_BITS) == reference_osb(words)


def test_extract_ids_are_sorted_distinct_and_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    sinks = []
    finish = features._finish

    def keep_sink(sink, bits, names, feats):   # record what was hashed
        sinks.append(sink)
        finish(sink, bits, names, feats)

    monkeypatch.setattr(features, "_finish", keep_sink)
    raws = [make_mail(s, b) for s, b in SPAMMY + HAMMY]
    raws += [make_mail("html", "<p>Hello <b>there</b> <a href='http://x.example/'>x</a>",
                       html=True), b"", b"x", b"Subject: only a header\r\n"]
    for raw in raws:
        ids = features.extract(raw).ids
        sink = sinks.pop()
        expected = {zlib.crc32(t.encode("utf-8", "surrogatepass")) % PRIME for t in sink.tokens}
        for blob in sink.blobs:
            expected |= {int.from_bytes(blob[i:i + 4], "little") % PRIME
                         for i in range(len(blob) - 3)}
        expected |= reference_osb(sink.words)
        assert ids.tolist() == sorted(expected)


def reference_learn(weights: array, accum: array, ids: list[int], error: float) -> None:
    """The AdaGrad step one weight at a time (doubles, stored as float32)."""
    g = error / math.sqrt(len(ids))
    for i in ids:
        a = accum[i] + g * g
        accum[i] = a
        weights[i] = weights[i] + model.RATE * g / math.sqrt(a)


def test_numpy_learning_equals_reference() -> None:
    m = model.Model(bits=12)
    w, acc = array("f", bytes(4 << 12)), array("f", bytes(4 << 12))
    rng = np.random.default_rng(5)
    for step in range(200):
        ids = np.unique(rng.integers(0, 1 << 12, 300))
        is_spam = bool(step % 3)
        margin = m.margin(ids)
        expected = m.bias + sum(w[i] for i in ids.tolist()) / math.sqrt(len(ids))
        assert margin == pytest.approx(expected, abs=1e-9)   # summation order may differ
        error = (1.0 if is_spam else 0.0) - model.sigmoid(margin)
        if m.learn(ids, is_spam, margin):
            reference_learn(w, acc, ids.tolist(), error)
    assert m.weights.tobytes() == w.tobytes()      # bit for bit
    assert m.accum.tobytes() == acc.tobytes()


def test_models_take_plain_lists_and_empty_sets() -> None:
    m = model.Model(bits=10)
    assert m.margin([]) == m.bias
    assert m.learn([3, 5, 7], True)
    assert m.margin([3, 5, 7]) == pytest.approx(m.margin(np.array([3, 5, 7])))
    before = m.weights.copy()
    assert m.learn([], True)                  # only the bias moves
    assert (m.weights == before).all() and m.learned == 2
    user = model.UserModel()
    assert user.margin(np.array([], np.int64)) == 0.0
    user.learn(np.array([1, 2]), True, 0.0)
    assert set(user.weights) == {1, 2} and all(type(k) is int for k in user.weights)
    assert user.margin([1, 2]) == user.margin(np.array([1, 2])) > 0


def test_reasons_are_the_largest_contributions() -> None:
    clf = Classifier.empty()
    for subject, body in SPAMMY:
        clf.learn(make_mail(subject, body), True)
    for subject, body in HAMMY:
        clf.learn(make_mail(subject, body), False)
    raw = make_mail(*SPAMMY[0])
    got = clf.score(raw).reasons
    f = clf.features(raw, names=True)
    scale = 1 / math.sqrt(len(f.ids))
    ranked = sorted(((abs(float(clf.model.weights[i])), float(clf.model.weights[i]), i)
                     for i in f.names), reverse=True)[:8]
    assert got == [(f.names[i], round(v * scale, 4)) for a, v, i in ranked if a]
