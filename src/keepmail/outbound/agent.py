"""The delivery agent: takes queued recipients to their domains' mail servers.

Per destination domain, up to max_per_domain connection workers run; each
keeps its connection open for idle_seconds and delivers every job queued for
the domain over it (connection reuse). For each connection: MX look-up
(RFC 5321 5.1, RFC 7505), TLS policy — DANE (RFC 7672) when TLSA records
validate, else MTA-STS (RFC 8461) in enforce mode, else opportunistic STARTTLS
(RFC 3207, RFC 7435) with a clear-text retry if the handshake fails — then
pipelined transactions (RFC 2920). A kept connection that the server has
meanwhile closed (end of stream, no reply at all, or 421 to MAIL) is replaced
by a new one for the same job at once, not counted as a failed attempt.
Replies decide per recipient: 2xx done, 4xx retry with exponential backoff
until lifetime_hours, 5xx bounce. A DSN (RFC 3464, see dsn.py) goes to the
sender on failure and once on delay. Outcomes are written to the queue after
the remote reply, in batches: one store write for every job that finished
while the previous write was being committed.

8-bit content to a server without 8BITMIME, and SMTPUTF8 mail to one without
SMTPUTF8, bounce (5.6.3 / 5.6.7, RFC 6152 3 and RFC 6531 3.2 allow it):
downgrading would re-encode the body and break the DKIM signature.

Every attempt is a "delivery" trace in the flight recorder, child of the
message's trace: plan (MX, policies), connection (host, IP, TLS version,
certificate verified and by which policy), each command with its reply, and
the outcome per recipient.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import sqlite3
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..inbound import routing
from ..smtp.handler import RecorderLike
from ..store import Copy, Store
from ..store import mail as mailq
from ..store import queue as q
from . import dane, dsn, forwarding, mxlookup
from .mtasts import MtaSts, Policy
from .settings import OutboundSection
from .smtpclient import ServerReply, SmtpClient, SmtpClientError

log = logging.getLogger("keepmail.outbound")

MAX_INFLIGHT = 20000          # recipients handed to workers at once
SCAN_INTERVAL = 15.0          # seconds between queue scans (CLI changes, safety net)
PLAN_SECONDS = 60.0           # MX/policy look-ups reused this long per destination
DOWN_SECONDS = 30.0           # after every MX failed, queued jobs defer without retrying


@dataclass
class Job:
    msg: q.QueuedMessage
    rcpts: list[q.QueuedRcpt]
    domain: str


@dataclass(frozen=True)
class Result:
    rcpt: q.QueuedRcpt
    outcome: str              # delivered | deferred | failed
    reply: str
    status: str
    remote: str = ""


class DeliveryError(Exception):
    def __init__(self, status: str, text: str, *, permanent: bool = False,
                 remote: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.permanent = permanent
        self.remote = remote


@dataclass
class Plan:
    targets: list[mxlookup.Target]
    policy: Policy | None
    note: str


@dataclass
class Conn:
    client: SmtpClient
    host: str
    ip: str
    tls_version: str = ""
    cipher: str = ""
    verified: bool = False
    policy: str = "none"      # none | opportunistic | mta-sts | dane
    detail: str = ""

    def summary(self) -> dict[str, Any]:
        return {"host": self.host, "ip": self.ip, "tls": self.tls_version or "none",
                "cipher": self.cipher, "verified": self.verified, "policy": self.policy,
                "detail": self.detail}


@dataclass
class Destination:
    domain: str
    jobs: collections.deque[Job] = field(default_factory=collections.deque)
    workers: int = 0
    # Idle workers, each waiting on its own future: a new job wakes exactly one
    # (an Event would wake them all, and all but one would go back to sleep).
    waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    plan: Plan | None = None
    plan_until: float = 0.0
    down: DeliveryError | None = None
    down_until: float = 0.0

    @property
    def idle(self) -> int:
        return len(self.waiters)

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all(self) -> None:
        while self.waiters:
            self.wake_one()


def backoff(settings: OutboundSection, attempts: int) -> float:
    """Seconds before the next try: doubling from retry_base, capped at retry_max."""
    return float(min(settings.retry_base * (2 ** min(attempts, 30)), settings.retry_max))


class DeliveryAgent:
    def __init__(self, store: Store, recorder: RecorderLike, settings: OutboundSection, *,
                 hostname: str, dns: mxlookup.Dns, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, srs_secret: bytes | None = None) -> None:
        self.store = store
        self.recorder = recorder
        self.settings = settings
        # Told each submitted recipient's final outcome (account id, rcpt, permanent
        # failure): the abuse guard watches bounce rates for hijacked accounts.
        self.on_result: Callable[[int, str, bool], None] | None = None
        self.hostname = hostname
        self.dns = dns
        self.clock = clock
        self.rng = rng or random.Random()
        self.srs_secret = srs_secret
        self.mtasts = MtaSts(store, dns, ca_file=settings.ca_file,
                             address=settings.mta_sts_address) if settings.mta_sts else None
        self._verify_ctx = ssl.create_default_context(cafile=settings.ca_file or None)
        self._verify_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._open_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._open_ctx.check_hostname = False
        self._open_ctx.verify_mode = ssl.CERT_NONE
        self._dests: dict[str, Destination] = {}
        # Plans outlive their Destination (which goes when its queue empties), and
        # one look-up per domain runs at a time, shared by the workers waiting on it.
        self._plans: dict[str, tuple[float, Plan]] = {}
        self._planning: dict[str, asyncio.Future[Plan]] = {}
        self._inflight: set[int] = set()
        self._active = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._closing = False
        # Bytes of messages handed over in memory (notify(raw=...)), kept while
        # jobs for them are in flight: saves a read and decryption per job.
        self._raw: dict[int, bytes] = {}
        self._jobs_of: collections.Counter[int] = collections.Counter()
        self._commits: set[asyncio.Task[None]] = set()
        # Outcomes waiting for the next batched queue update (see _conclude).
        self._batch: list[tuple[Job, list[Result]]] = []
        self._batch_task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None   # set by start()
        self.delivered = 0    # counters for benchmarks and metrics

    # -- service -------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._closing = False
        self._task = asyncio.create_task(self._scheduler(), name="outbound-scheduler")

    async def close(self, grace: float = 10.0) -> None:
        """Stop taking jobs; let transactions in flight finish for a while, then cancel.

        A cancelled transaction leaves its rows due: after restart the message is
        sent again (a duplicate at worst, never a loss).
        """
        self._closing = True
        self._wake.set()
        for dest in self._dests.values():
            dest.jobs.clear()
            dest.wake_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._workers:
            _done, pending = await asyncio.wait(set(self._workers), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._commits:
            await asyncio.wait(set(self._commits))

    def wake(self) -> None:
        """Ask for a queue scan now (after an operator change, say)."""
        self._wake.set()

    async def notify(self, msg_id: int, raw: bytes | None = None) -> bool:
        """Dispatch a just-committed message at once, without waiting for a scan."""
        def load(c: sqlite3.Connection) -> tuple[q.QueuedMessage | None, list[q.QueuedRcpt]]:
            return q.get_message(c, msg_id), q.rcpts_of(c, msg_id)

        msg, rcpts = self.store.read_now(load)
        return self.dispatch_rows(msg, rcpts, raw)

    def dispatch_rows(self, msg: q.QueuedMessage | None, rcpts: list[q.QueuedRcpt],
                      raw: bytes | None = None) -> bool:
        """Dispatch rows the caller has just committed (see q.enqueue_rows)."""
        if msg is None or self._closing:
            return False
        if raw is not None and len(raw) <= 4 * 1024 * 1024:
            self._raw[msg.id] = raw
        self._dispatch_rows(msg, [r for r in rcpts if not r.held])
        if not self._jobs_of[msg.id]:
            self._raw.pop(msg.id, None)
        return True

    def notify_threadsafe(self, msg_id: int) -> None:
        """From another thread (the store's writer): dispatch msg_id once committed."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: loop.create_task(self.notify_when_visible(msg_id)))

    async def notify_when_visible(self, msg_id: int, tries: int = 40) -> None:
        """For rows written inside someone else's transaction (the MX forwarder)."""
        for i in range(tries):
            if await self.notify(msg_id):
                return
            await asyncio.sleep(min(0.01 * (2 ** i), 1.0))

    # -- scheduling ----------------------------------------------------------
    async def _scheduler(self) -> None:
        while not self._closing:
            self._wake.clear()
            delay = SCAN_INTERVAL
            try:
                delay = await self._scan()
            except Exception:
                log.exception("queue scan failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, delay))

    async def _scan(self) -> float:
        """Dispatch due recipients; return seconds until the next one is due."""
        now = self.clock()
        room = MAX_INFLIGHT - len(self._inflight)
        exclude = set(self._inflight)

        def read(c: sqlite3.Connection) -> tuple[list[q.QueuedRcpt], dict[int, q.QueuedMessage],
                                                 float | None]:
            rows = q.due(c, now, max(room, 0), exclude) if room > 0 else []
            msgs = {m: q.get_message(c, m) for m in {r.msg_id for r in rows}}
            nxt = c.execute("SELECT MIN(next_attempt) FROM queue_rcpts WHERE held = 0"
                            " AND next_attempt > ?", (now,)).fetchone()[0]
            return rows, {k: v for k, v in msgs.items() if v is not None}, nxt

        rows, msgs, nxt = await self.store.read(read)
        by_msg: dict[int, list[q.QueuedRcpt]] = collections.defaultdict(list)
        for row in rows:
            by_msg[row.msg_id].append(row)
        for msg_id, rcpts in by_msg.items():
            if msg_id in msgs:
                self._dispatch_rows(msgs[msg_id], rcpts)
        if nxt is None:
            return SCAN_INTERVAL
        return min(SCAN_INTERVAL, max(0.0, float(nxt) - self.clock()))

    def _dispatch_rows(self, msg: q.QueuedMessage, rcpts: list[q.QueuedRcpt]) -> None:
        fresh = [r for r in rcpts if r.id not in self._inflight]
        by_domain: dict[str, list[q.QueuedRcpt]] = collections.defaultdict(list)
        for r in fresh:
            by_domain[r.domain].append(r)
        size = max(1, self.settings.max_rcpts_per_transaction)
        for domain, group in by_domain.items():
            for start in range(0, len(group), size):
                self._dispatch(Job(msg, group[start:start + size], domain))

    def _dispatch(self, job: Job) -> None:
        self._inflight.update(r.id for r in job.rcpts)
        self._jobs_of[job.msg.id] += 1
        dest = self._dests.get(job.domain)
        if dest is None:
            dest = self._dests[job.domain] = Destination(job.domain)
        dest.jobs.append(job)
        dest.wake_one()
        self._spawn(dest)

    def _spawn(self, dest: Destination) -> None:
        """One more worker for dest, unless one is idle or a limit is reached."""
        if (dest.jobs and dest.idle == 0 and dest.workers < self.settings.max_per_domain
                and self._active < self.settings.max_connections and not self._closing):
            dest.workers += 1
            self._active += 1
            task = asyncio.create_task(self._worker(dest), name=f"deliver:{dest.domain}")
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    def _rebalance(self) -> None:
        for dest in list(self._dests.values()):
            if dest.jobs and dest.workers == 0:
                self._spawn(dest)
            elif not dest.jobs and dest.workers == 0 and self._dests.get(dest.domain) is dest:
                del self._dests[dest.domain]

    # -- workers ---------------------------------------------------------------
    async def _worker(self, dest: Destination) -> None:
        conn: Conn | None = None
        try:
            while not self._closing:
                job = await self._next_job(dest, conn is not None)
                if job is None:
                    break
                conn = await self._attempt(dest, job, conn)
        except Exception:
            log.exception("delivery worker for %s failed", dest.domain)
        finally:
            if conn is not None:
                await conn.client.quit()
            dest.workers -= 1
            self._active -= 1
            self._rebalance()

    async def _next_job(self, dest: Destination, keep_open: bool) -> Job | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.settings.idle_seconds if keep_open else 0.0)
        while not dest.jobs:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                return None
            waiter: asyncio.Future[None] = loop.create_future()
            dest.waiters.append(waiter)
            try:
                # asyncio.timeout, not wait_for: no extra task per wait.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()
                    with contextlib.suppress(ValueError):
                        dest.waiters.remove(waiter)
        return dest.jobs.popleft()

    async def _attempt(self, dest: Destination, job: Job, conn: Conn | None) -> Conn | None:
        msg = job.msg
        trace = self.recorder.new_trace(
            "delivery", parent=msg.trace_id, mail_from=msg.sender,
            rcpts=[r.rcpt for r in job.rcpts], message_id=msg.message_id,
            detail=f"attempt {job.rcpts[0].attempts + 1} to {job.domain}")

        def rec(kind: str, **data: Any) -> None:
            self.recorder.event(trace, kind, **data)

        self.recorder.event(msg.trace_id, "delivery-attempt", trace=trace, domain=job.domain)
        try:
            raw = self._raw.get(msg.id) or await self.store.read_blob(msg.blob_id)
            results: list[Result] | None = None
            if conn is not None and (conn.client.closed or conn.client.reader.at_eof()):
                conn.client.close()   # the server hung up while the connection was idle
                conn = None
            if conn is not None:
                conn.client.record = rec
                rec("connection", reused=True, **conn.summary())
                self.recorder.update(trace, ip=conn.ip)
                results = await self._on_reused(conn, job, raw, rec)
                if results is None:
                    conn.client.close()
                    conn = None
            if conn is None:
                conn = await self._connect(dest, rec)
                self.recorder.update(trace, ip=conn.ip)
                results = (await self._transaction(conn, job, raw))[0]
            assert results is not None
        except DeliveryError as exc:
            results = [Result(r, "failed" if exc.permanent else "deferred", exc.text,
                              exc.status, exc.remote) for r in job.rcpts]
            raw = raw if "raw" in locals() else b""
        except Exception as exc:
            if not isinstance(exc, SmtpClientError):
                log.exception("delivery attempt to %s failed unexpectedly", job.domain)
            host = conn.host if conn else ""
            results = [Result(r, "deferred", f"connection to {host} lost: {exc}", "4.4.2",
                              host) for r in job.rcpts]
            if conn is not None:
                conn.client.close()
            conn = None
            raw = raw if "raw" in locals() else b""
        # Record the outcome in the background: the connection moves on to the
        # next job while the group commit runs (the rows stay in flight till then).
        self._conclude(job, results, trace, raw)
        if conn is not None and conn.client.closed:
            return None
        return conn

    def _conclude(self, job: Job, results: list[Result], trace: str, raw: bytes) -> None:
        """Record a job's outcome; its queue rows change in the background.

        The common outcomes (delivered, deferred) join the next batch of queue
        updates: one write, and a few statements, for every job that finished
        meanwhile. Outcomes with a DSN to store go their own way (_finish).
        """
        try:
            final, notice = self._outcomes_of(job, results, trace)
        except Exception:
            log.exception("recording the outcome of a delivery to %s failed", job.domain)
            self._release(job)
            return
        if notice or any(r.outcome == "failed" for r in final):
            task = asyncio.create_task(self._finish_safely(job, final, notice, raw))
            self._commits.add(task)
            task.add_done_callback(self._commits.discard)
            return
        self._batch.append((job, final))
        if self._batch_task is None:
            self._batch_task = asyncio.create_task(self._write_batches())
            self._commits.add(self._batch_task)
            self._batch_task.add_done_callback(self._commits.discard)

    async def _write_batches(self) -> None:
        try:
            while self._batch:
                batch, self._batch = self._batch, []
                try:
                    await self.store.write(_batch_txn(batch, self.clock(), self.settings))
                except Exception:
                    # The rows stay as they were: due again at the next scan.
                    log.exception("recording the outcome of %d deliveries failed", len(batch))
                else:
                    self.delivered += sum(1 for _job, final in batch for r in final
                                          if r.outcome == "delivered")
                for job, _final in batch:
                    self._release(job)
                if any(r.outcome == "deferred" for _job, final in batch for r in final):
                    self._wake.set()
        finally:
            self._batch_task = None

    def _release(self, job: Job) -> None:
        """The job's rows are no longer in flight; drop its message's bytes if unused."""
        self._inflight.difference_update(r.id for r in job.rcpts)
        self._jobs_of[job.msg.id] -= 1
        if self._jobs_of[job.msg.id] <= 0:
            del self._jobs_of[job.msg.id]
            self._raw.pop(job.msg.id, None)

    async def _finish_safely(self, job: Job, final: list[Result], notice: bool,
                             raw: bytes) -> None:
        try:
            await self._finish(job, final, notice, raw)
        except Exception:
            # The rows stay as they were: due again at the next scan.
            log.exception("recording the outcome of a delivery to %s failed", job.domain)
        finally:
            self._release(job)

    # -- planning and connecting -----------------------------------------------
    async def _plan(self, dest: Destination, rec: Callable[..., None]) -> Plan:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if dest.plan is not None and dest.plan_until > now:
            return dest.plan
        cached = self._plans.get(dest.domain)
        if cached is not None and cached[0] > now:
            dest.plan, dest.plan_until = cached[1], cached[0]
            return cached[1]
        shared = self._planning.get(dest.domain)
        if shared is not None:
            try:
                plan = await asyncio.shield(shared)
            except DeliveryError as exc:
                rec("plan", error=exc.text)
                raise
            except asyncio.CancelledError:
                if not shared.cancelled():
                    raise        # this worker was cancelled
                raise DeliveryError("4.4.3", f"MX look-up for {dest.domain} interrupted") \
                    from None
        else:
            shared = loop.create_future()
            self._planning[dest.domain] = shared
            try:
                plan = await self._look_up(dest.domain, rec)
            except BaseException as exc:
                if isinstance(exc, DeliveryError):
                    shared.set_exception(exc)
                    shared.exception()   # retrieved: no "never retrieved" warning
                else:
                    shared.cancel()
                raise
            finally:
                del self._planning[dest.domain]
            shared.set_result(plan)
            until = loop.time() + PLAN_SECONDS
            if len(self._plans) >= 1000:
                self._plans = {d: p for d, p in self._plans.items() if p[0] > now}
            self._plans[dest.domain] = (until, plan)
        entry = self._plans.get(dest.domain)
        dest.plan, dest.plan_until = plan, entry[0] if entry else now + PLAN_SECONDS
        return plan

    async def _look_up(self, domain: str, rec: Callable[..., None]) -> Plan:
        """MX targets and MTA-STS policy for domain (recorded on the trace that asked)."""
        try:
            targets = await mxlookup.lookup(self.dns, domain, rng=self.rng)
        except mxlookup.NoRoute as exc:
            rec("plan", error=str(exc))
            raise DeliveryError(exc.status, str(exc), permanent=exc.permanent) from None
        policy, note = None, "MTA-STS disabled"
        if self.mtasts is not None:
            policy, note = await self.mtasts.policy(domain, self.clock())
        rec("plan", mx=[{"host": t.host, "preference": t.preference, "ips": t.ips,
                         "dnssec": t.secure, "error": t.error} for t in targets],
            mta_sts=policy.mode if policy else "none", mta_sts_note=note)
        return Plan(targets, policy, note)

    async def _connect(self, dest: Destination, rec: Callable[..., None]) -> Conn:
        loop = asyncio.get_running_loop()
        if dest.down is not None and dest.down_until > loop.time():
            rec("not-attempted", reason=dest.down.text)
            raise dest.down
        plan = await self._plan(dest, rec)
        policy = plan.policy if plan.policy and plan.policy.mode != "none" else None
        enforce = policy is not None and policy.mode == "enforce"
        errors: list[str] = []
        for target in plan.targets:
            if policy is not None and not policy.allows(target.host):
                rec("mta-sts-mismatch", host=target.host, mode=policy.mode)
                if enforce:
                    errors.append(f"{target.host}: not listed in the MTA-STS policy")
                    continue
            state = dane.DaneState(())
            if self.settings.dane:
                state = await dane.lookup(self.dns, target.host, self.settings.remote_port,
                                          target.secure)
                if state.error:
                    errors.append(f"{target.host}: {state.error}")
                    continue
            for ip in target.ips:
                try:
                    return await self._open(target.host, ip, state, enforce, rec)
                except (DeliveryError, SmtpClientError) as exc:
                    errors.append(f"{target.host}[{ip}]: {exc}")
                    rec("connect-failed", host=target.host, ip=ip, error=str(exc))
        error = DeliveryError("4.4.1", "; ".join(errors) or "no usable mail server")
        dest.down, dest.down_until = error, loop.time() + DOWN_SECONDS
        raise error

    async def _dial(self, host: str, ip: str, rec: Callable[..., None]) -> SmtpClient:
        s = self.settings
        client = await SmtpClient.connect(ip, s.remote_port, timeout=s.connect_timeout,
                                          record=rec, local_addr=s.bind_address)
        client.timeout = s.connect_timeout
        rec("connect", host=host, ip=ip, port=s.remote_port)
        greeting = await client.greeting()
        if greeting.code != 220:
            await client.quit()
            raise DeliveryError("4.4.2", f"greeting {greeting}", remote=host)
        reply = await client.ehlo(self.hostname)
        if reply.code != 250:
            await client.quit()
            raise DeliveryError("4.4.2", f"EHLO/HELO refused: {reply}", remote=host)
        client.timeout = s.command_timeout
        return client

    async def _open(self, host: str, ip: str, state: dane.DaneState, enforce: bool,
                    rec: Callable[..., None]) -> Conn:
        client = await self._dial(host, ip, rec)
        policy = "dane" if state.applies else "mta-sts" if enforce else "opportunistic"
        required = policy != "opportunistic"
        if not client.offers("STARTTLS"):
            if required:
                await client.quit()
                raise DeliveryError("4.7.5", f"{host} does not offer STARTTLS, which "
                                    f"{policy.upper()} requires", remote=host)
            conn = Conn(client, host, ip, detail="STARTTLS not offered")
            rec("connection", reused=False, **conn.summary())
            return conn
        ctx = self._verify_ctx if policy == "mta-sts" else self._open_ctx
        try:
            reply = await client.starttls(ctx, host if policy == "mta-sts" else None)
        except SmtpClientError as exc:
            if required:
                raise DeliveryError("4.7.5", f"{policy.upper()} requires a valid TLS "
                                    f"session with {host}: {exc}", remote=host) from None
            rec("tls-failed", error=str(exc), fallback="clear text (RFC 7435)")
            client = await self._dial(host, ip, rec)
            conn = Conn(client, host, ip, detail=f"TLS failed, sent in clear: {exc}")
            rec("connection", reused=False, **conn.summary())
            return conn
        if reply.code != 220:
            if required:
                await client.quit()
                raise DeliveryError("4.7.5", f"STARTTLS refused: {reply}", remote=host)
            conn = Conn(client, host, ip, detail=f"STARTTLS refused: {reply}")
            rec("connection", reused=False, **conn.summary())
            return conn
        return await self._after_tls(client, host, ip, policy, state, rec)

    async def _after_tls(self, client: SmtpClient, host: str, ip: str, policy: str,
                         state: dane.DaneState, rec: Callable[..., None]) -> Conn:
        obj = client.ssl_object
        conn = Conn(client, host, ip, tls_version=obj.version() or "",
                    cipher=(obj.cipher() or ("",))[0], policy=policy)
        if policy == "dane":
            ok, why = dane.verify(state, client.peer_chain(), host)
            conn.detail = why
            if not ok:
                rec("connection", reused=False, **conn.summary())
                await client.quit()
                raise DeliveryError("4.7.5", f"DANE: {why}", remote=host)
            conn.verified = bool(state.usable)
        elif policy == "mta-sts":
            conn.verified, conn.detail = True, "PKIX certificate valid for the MX name"
        else:
            conn.detail = "certificate not checked (opportunistic TLS)"
        rec("connection", reused=False, **conn.summary())
        reply = await client.ehlo(self.hostname)
        if reply.code != 250:
            await client.quit()
            raise DeliveryError("4.4.2", f"EHLO after STARTTLS refused: {reply}", remote=host)
        return conn

    # -- the transaction -----------------------------------------------------------
    async def _on_reused(self, conn: Conn, job: Job, raw: bytes,
                         rec: Callable[..., None]) -> list[Result] | None:
        """The job's transaction on a connection kept open from earlier jobs.

        None when the connection turns out dead before the server took anything
        (no reply at all, or 421 to MAIL: closed for idleness or after so many
        messages): the caller then sends on a new connection, as a first
        attempt would, instead of deferring the job. Once any other reply has
        come, failures count as usual (the server may have the message).
        """
        client = conn.client
        before = client.replies
        try:
            results, mail = await self._transaction(conn, job, raw)
        except SmtpClientError as exc:
            if client.replies != before:
                raise
            why = str(exc)
        else:
            if mail.code != 421:
                return results
            why = str(mail)
        rec("connection-stale", host=conn.host, ip=conn.ip, error=why,
            action="new connection")
        return None

    async def _transaction(self, conn: Conn, job: Job,
                           raw: bytes) -> tuple[list[Result], ServerReply]:
        msg, client = job.msg, conn.client
        if msg.body_8bit and not client.offers("8BITMIME"):
            raise DeliveryError("5.6.3", f"{conn.host} does not accept 8-bit content "
                                "(no 8BITMIME) and keepmail does not downgrade signed mail",
                                permanent=True, remote=conn.host)
        if msg.smtputf8 and not client.offers("SMTPUTF8"):
            raise DeliveryError("5.6.7", f"{conn.host} does not support internationalized "
                                "addresses or headers (no SMTPUTF8)", permanent=True,
                                remote=conn.host)
        params = []
        if client.offers("SIZE"):
            params.append(f"SIZE={len(raw)}")
        if msg.body_8bit:
            params.append("BODY=8BITMIME")
        if msg.smtputf8:
            params.append("SMTPUTF8")
        mail, rcpt_replies, final = await client.transaction(
            msg.sender, params, [r.rcpt for r in job.rcpts], raw)
        return [self._result(conn, rcpt, mail, rr, final)
                for rcpt, rr in zip(job.rcpts, rcpt_replies, strict=True)], mail

    @staticmethod
    def _result(conn: Conn, rcpt: q.QueuedRcpt, mail: ServerReply, rr: ServerReply | None,
                final: ServerReply | None) -> Result:
        reply: ServerReply | None
        if mail.code != 250:
            reply = mail
        elif rr is None or rr.code >= 300:
            reply = rr
        else:
            reply = final
        if reply is None:
            return Result(rcpt, "deferred", "transaction not completed", "4.4.2", conn.host)
        outcome = "delivered" if reply.code < 300 else \
            "failed" if reply.code >= 500 else "deferred"
        return Result(rcpt, outcome, str(reply), reply.status, conn.host)

    # -- outcomes ----------------------------------------------------------------------
    def _outcomes_of(self, job: Job, results: list[Result],
                     trace: str) -> tuple[list[Result], bool]:
        """Final results (expired deferrals fail), recorded and reported; and whether a
        delay notice is due."""
        now = self.clock()
        msg, s = job.msg, self.settings
        expired = now - msg.created >= s.lifetime_hours * 3600
        final: list[Result] = []
        for res in results:
            if res.outcome == "deferred" and expired:
                res = Result(res.rcpt, "failed", f"gave up after {s.lifetime_hours:g} hours "
                             f"in the queue; last error: {res.reply}", "4.4.7", res.remote)
            final.append(res)
            self.recorder.event(trace, "result", rcpt=res.rcpt.rcpt, outcome=res.outcome,
                                status=res.status, reply=res.reply)
        self._summarize(trace, msg, final)
        self._report_outcomes(msg, final)
        notice = not msg.delay_notified and s.delay_notice_hours > 0 and \
            now - msg.created >= s.delay_notice_hours * 3600 and \
            any(r.outcome == "deferred" for r in final)
        return final, notice

    async def _finish(self, job: Job, final: list[Result], notice: bool, raw: bytes) -> None:
        """Queue changes for an outcome that needs a DSN (bounce or delay notice)."""
        now = self.clock()
        msg, s = job.msg, self.settings
        done = [r.rcpt.id for r in final if r.outcome != "deferred"]
        deferred = [r for r in final if r.outcome == "deferred"]
        failed = [r for r in final if r.outcome == "failed"]

        def queue_txn(conn: sqlite3.Connection) -> None:
            q.mark_done(conn, done)
            for r in deferred:
                q.defer(conn, [r.rcpt.id], r.reply, now + backoff(s, r.rcpt.attempts), now)
            if notice:
                q.set_delay_notified(conn, msg.id)

        dsns = []
        if failed:
            dsns.append(self._dsn("failed", msg, failed, raw, now))
        if notice:
            dsns.append(self._dsn("delayed", msg, deferred, raw, now))
        await self._commit(msg, [d for d in dsns if d is not None], queue_txn)
        self.delivered += sum(1 for r in final if r.outcome == "delivered")
        if deferred:
            self._wake.set()

    def _report_outcomes(self, msg: q.QueuedMessage, results: list[Result]) -> None:
        if self.on_result is None or msg.account_id is None:
            return
        for res in results:
            if res.outcome != "deferred":
                self.on_result(msg.account_id, res.rcpt.rcpt, res.outcome == "failed")

    def _summarize(self, trace: str, msg: q.QueuedMessage, results: list[Result]) -> None:
        outcomes = {r.outcome for r in results}
        status = outcomes.pop() if len(outcomes) == 1 else "partial"
        problem = next((r.reply for r in results if r.outcome != "delivered"), "")
        self.recorder.update(trace, status=status, detail=problem[:500], ended=self.clock())
        self.recorder.event(msg.trace_id, "delivery-result", trace=trace, status=status,
                            rcpts={r.rcpt.rcpt: r.outcome for r in results})

    def _dsn(self, kind: str, msg: q.QueuedMessage, results: list[Result], raw: bytes,
             now: float) -> bytes | None:
        if not msg.sender or msg.kind == "dsn":
            self.recorder.event(msg.trace_id, "no-dsn", reason="null reverse-path", dsn=kind)
            return None
        reports = [dsn.RcptReport(r.rcpt.rcpt, r.status, r.reply, r.remote, now)
                   for r in results]
        return dsn.build(kind=kind, hostname=self.hostname, sender=msg.sender, original=raw,
                         arrival=msg.created, reports=reports, now=now,
                         retry_until=msg.created + self.settings.lifetime_hours * 3600)

    async def _commit(self, msg: q.QueuedMessage, dsns: list[bytes],
                      queue_txn: Callable[[sqlite3.Connection], None]) -> None:
        """Store the DSNs and the queue changes in one transaction each (DSN first)."""
        if not dsns:
            await self.store.write(queue_txn)
            return
        to = self._dsn_recipient(msg.sender)
        copies = self.store.read_now(lambda c: _inbox_copies(c, to))
        for i, body in enumerate(dsns):
            txn = queue_txn if i == len(dsns) - 1 else None
            dsn_trace = self.recorder.new_trace("dsn", parent=msg.trace_id, rcpts=to,
                                                mail_from="", status="queued")
            if copies:
                await self.store.deliver(body, copies, trace_id=dsn_trace,
                                         extra=(lambda c, _b, t=txn: t(c)) if txn else None)
                self.recorder.update(dsn_trace, status="delivered", detail="local inbox")
                continue
            new_id = await self.store.store_blob(body, 0, lambda c, blob_id, t=txn, b=body,
                                                 tr=dsn_trace: _queue_dsn(c, blob_id, b, to,
                                                                          tr, t))
            await self.notify(new_id)

    def _dsn_recipient(self, sender: str) -> str:
        """Where a DSN goes: the sender, or the original one behind our SRS address."""
        if self.srs_secret is not None:
            return forwarding.reverse(self.srs_secret, sender) or sender
        return sender


def _batch_txn(batch: list[tuple[Job, list[Result]]], now: float,
               settings: OutboundSection) -> Callable[[sqlite3.Connection], None]:
    """One write for a batch of outcomes: delivered rows go, deferred ones wait."""
    done = [r.rcpt.id for _job, final in batch for r in final if r.outcome != "deferred"]
    deferred = [(now, r.reply, now + backoff(settings, r.rcpt.attempts), r.rcpt.id)
                for _job, final in batch for r in final if r.outcome == "deferred"]

    def txn(conn: sqlite3.Connection) -> None:
        if done:
            q.mark_done(conn, done)
        if deferred:
            q.defer_each(conn, deferred)

    return txn


def _queue_dsn(conn: sqlite3.Connection, blob_id: int, body: bytes, to: str, trace: str,
               txn: Callable[[sqlite3.Connection], None] | None) -> int:
    msg_id = q.enqueue(conn, blob_id, len(body), "", [to], kind="dsn", trace_id=trace,
                       body_8bit=not body.isascii())
    if txn is not None:
        txn(conn)
    return msg_id


def _inbox_copies(conn: sqlite3.Connection, address: str) -> list[Copy]:
    """INBOX copies for a local address (the DSN goes straight there), else []."""
    _, _, domain = address.rpartition("@")
    if not domain or not routing.is_local_domain(conn, domain):
        return []
    route = routing.resolve(conn, address)
    if route is None:
        return []
    copies = []
    for account_id in route.accounts:
        box = mailq.get_mailbox_by_role(conn, account_id, "inbox") or mailq.get_mailbox(
            conn, account_id, "INBOX")
        if box is not None:
            copies.append(Copy(account_id, box.id, box.name))
    return copies
