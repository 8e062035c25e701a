"""Connection reuse: one outbound connection carries message after message to the
same destination, and a reused connection that the server has dropped (or closes
with 421) costs a new connection, not a deferral; failures after the server
answered count as usual. Real submission, agent and a scripted peer on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from .conftest import CA, FAST, Org, asubmit, message, wait_for, with_settings
from .peers import HANG_UP, LocalDns, PeerSession, ScriptedSmtp
from .test_delivery import HOST, scenario

# One worker per destination that stays connected between messages.
ONE_CONNECTION = with_settings(FAST, max_per_domain=1, idle_seconds=30.0)


async def send_each(org: Org, subjects: list[str]) -> None:
    """Submit one message per subject, one after another (each acknowledged first)."""
    for subject in subjects:
        await asubmit(HOST, org.port, "alice@a.test", "alice@a.test", ["bob@b.test"],
                      message("alice@a.test", "bob@b.test", subject=subject))


def subjects_received(peer: ScriptedSmtp) -> list[str]:
    out = []
    for m in peer.messages:
        for line in m.data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
    return sorted(out)


async def deliver_all(org: Org, peer: ScriptedSmtp, subjects: list[str]) -> None:
    """Submit them, wait until the peer has them all and the queue is empty, and
    check each arrived exactly once."""
    await send_each(org, subjects)
    await wait_for(lambda: len(peer.messages) == len(subjects),
                   what=f"{len(subjects)} deliveries")
    await wait_for(lambda: org.queue_size() == (0, 0), what="empty queue")
    assert subjects_received(peer) == subjects


def outcomes(org: Org) -> list[str]:
    return [json.loads(e[2])["outcome"] for e in org.events("result")]


def test_one_connection_carries_several_messages(tmp_path: Path, ca: CA) -> None:
    subjects = [f"message {i}" for i in range(5)]

    async def body(org: Org, peer: ScriptedSmtp, dns: LocalDns) -> None:
        await deliver_all(org, peer, subjects)
        assert peer.connections == 1
        assert sum(1 for c in peer.commands if c.startswith("EHLO")) == 1
        assert sum(1 for c in peer.commands if c.startswith("MAIL")) == 5
        reused = [json.loads(e[2])["reused"] for e in org.events("connection")]
        assert reused == [False, True, True, True, True]
        assert outcomes(org) == ["delivered"] * 5

    scenario(tmp_path, ca, body, settings=ONE_CONNECTION)


@pytest.mark.parametrize("refusal", [HANG_UP, "421 4.7.0 Too many messages, closing"])
def test_reused_connection_closed_by_the_server_costs_a_new_connection(
        tmp_path: Path, ca: CA, refusal: str) -> None:
    # The server takes one message per connection: from the second MAIL on, it
    # hangs up without a word, or says 421 (RFC 5321 3.8) and closes.
    mails: list[PeerSession] = []   # one entry per MAIL command, by session

    def one_per_connection(session: PeerSession, command: str) -> str | None:
        if command.startswith("MAIL"):
            mails.append(session)
            if sum(1 for s in mails if s is session) > 1:
                return refusal
        return None

    subjects = [f"message {i}" for i in range(3)]

    async def body(org: Org, peer: ScriptedSmtp, dns: LocalDns) -> None:
        await deliver_all(org, peer, subjects)          # each exactly once
        assert peer.connections == 3
        # Retried at once on a new connection: no deferral, no backoff.
        assert outcomes(org) == ["delivered"] * 3
        stale = [json.loads(e[2]) for e in org.events("connection-stale")]
        assert len(stale) == 2 and all(s["action"] == "new connection" for s in stale)

    scenario(tmp_path, ca, body, script=one_per_connection, settings=ONE_CONNECTION)


def test_failure_of_a_later_message_on_a_reused_connection_defers_only_that_one(
        tmp_path: Path, ca: CA) -> None:
    # The second message is refused at the end of its data (the server has
    # answered MAIL, RCPT and DATA): that is an ordinary temporary failure.
    refused = {"n": 0}

    def refuse_second_once(session: PeerSession, command: str) -> str | None:
        if command == "(end of data)" and session.peer.messages and not refused["n"]:
            refused["n"] += 1
            return "451 4.3.0 Queue full, try again later"
        return None

    subjects = [f"message {i}" for i in range(3)]

    async def body(org: Org, peer: ScriptedSmtp, dns: LocalDns) -> None:
        await deliver_all(org, peer, subjects)          # no duplicate, no loss
        assert refused["n"] == 1
        assert sorted(outcomes(org)) == ["deferred"] + ["delivered"] * 3
        assert peer.connections == 1                       # the connection stayed usable

    scenario(tmp_path, ca, body, script=refuse_second_once, settings=ONE_CONNECTION)


def test_a_server_that_stops_answering_times_out_and_the_message_is_retried(
        tmp_path: Path, ca: CA) -> None:
    # The end of data goes unanswered past command_timeout: the attempt gives up
    # (the connection is dropped), the message is deferred, and a later attempt
    # delivers it.
    async def body(org: Org, peer: ScriptedSmtp, dns: LocalDns) -> None:
        peer.gate = asyncio.Event()        # hold end-of-data replies
        await send_each(org, ["slow"])

        def timed_out() -> bool:
            return any("no reply within 0.5 s" in json.loads(e[2])["reply"]
                       for e in org.events("result"))

        await wait_for(timed_out, what="a timed-out attempt")
        peer.gate.set()
        await wait_for(lambda: org.queue_size() == (0, 0), what="delivery after the timeout")
        assert "slow" in subjects_received(peer)
        assert outcomes(org)[0] == "deferred" and outcomes(org)[-1] == "delivered"

    scenario(tmp_path, ca, body, settings=with_settings(FAST, command_timeout=0.5))
