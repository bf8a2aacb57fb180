"""Redis: the latest values per (scope, id, window), leaderboards, overdue leads, update channel.

The key layout is :mod:`streams.redis_layout` (and the README). Every
``SALESPULSE_REDIS_INTERVAL_SECONDS`` (stretched to :mod:`streams.pacing`'s factor times the last
round's cost in a backlog) one pipeline writes what changed since the last round
(:mod:`streams.readout`): per scope with changed windows one script call (:data:`WRITE_WINDOWS`)
sets each window's hash and sends one message per window on its update channel; then, in a task
of its own (the next round's values do not wait for them, its leaderboards do), and at most
every ``SALESPULSE_REDIS_BOARD_INTERVAL_SECONDS`` (with the latest values of each rep window
changed since), per rep one call (:data:`WRITE_BOARDS`) sets its leaderboard entries whose
value or team changed; every
second, the overdue leads of the aggregate partitions this worker owns. Writes are idempotent (whole values, never increments),
and every key expires when its window closes.

Redis never holds up the events: the sink runs in a task of its own, with short socket
timeouts. When Redis is away (refused, timed out, restarted, out of memory) the sink logs it
once, shows it on ``salespulse_redis_up`` and /healthz, keeps reading the readout (so nothing
piles up) and tries again every second; once Redis answers it writes every live window again
and deletes the keys of the scopes it owns that hold no live window: afterwards Redis holds what
/metrics shows. It does the same once the roll-up stage has read the partitions it was given
(at start and after a rebalance), so that nothing stale of what it owns is left.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from metrics.catalog import Catalog
from metrics.leads import UNASSIGNED
from metrics.snapshots import SnapshotFormat, rfc3339
from streams.pacing import BACKLOG, LEARN_WINDOWS, WINDOW_COST, Pacing, Rounds
from streams.readout import Reader, Readout, WindowUpdate
from streams.redis_layout import Layout, ranked_kpis

log = logging.getLogger(__name__)

_JSON = msgspec.json.Encoder()
#: Overdue leads: written at most this often, re-written at least this often, and kept this
#: long after the last write (a worker that dies leaves its partitions' lists only that long).
OVERDUE_EVERY, OVERDUE_REFRESH, OVERDUE_TTL = 1.0, 10.0, 60
RETRY_EVERY = 1.0
#: Stale keys per DEL command (after a resync).
PIPELINE_CHUNK = 5000
#: Script calls per pipeline: a call writes all changed windows of a scope (or a rep's
#: leaderboard entries), and Redis takes ~0.1-0.2 ms per window; a pipeline of a round of
#: 1,000 reps kept it busy for seconds, longer than the socket timeout (a write to Redis that
#: does not go through in it is an outage). redis-py also holds a pipeline's commands and packs
#: them all at once: a window's command carries its KPIs' JSON (~10 KB at the full catalog), and
#: 5,000 windows in one pipeline were ~70 MB at once (docs/benchmark.md, Memory).
CALLS_CHUNK = 200

#: {partition: {lead id: JSON of the lead}}: the overdue leads of the partitions this worker owns
OverdueLeads = Callable[[], Mapping[int, Mapping[str, bytes]]]

#: One scope's writes of a round as one command: redis-py spends 10-20 us of the loop per
#: command and ~2 us per argument (packing, reading the reply), and a window is a dozen commands
#: or more (its hash, its expiry, its message, a rep's leaderboard entries): a full round of
#: 1,000 reps took ~4 s. As one script call per scope (rep, team, org) carrying every window of
#: it that changed (six for a rep with events now: minute to quarter) it is one command per
#: scope. KEYS: the windows' hashes. ARGV: four per window: expiry (Unix seconds), channel, the
#: record's fields but ``kpis`` as a JSON object of strings (``{"scope":..,"id":..,..}``), and
#: ``kpis`` (JSON) or an empty string: the scope has no values left in the window (e.g. its
#: events moved to the rep's roster team), delete it. The message is the record with its
#: ``kpis`` last, as ``_JSON.encode`` writes it, and the hash holds the same fields. (The
#: hash's fields and values as arguments of their own were ~20 arguments a window, and redis-py
#: packed each in Python: ~6 % of the worker's loop at 2,000 events/s.)
WRITE_WINDOWS = """
local a = 1
for i = 1, #KEYS do
  local at, channel, head, kpis = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  a = a + 4
  if kpis ~= '' then
    local fields = {}
    for name, v in pairs(cjson.decode(head)) do
      fields[#fields + 1] = name
      fields[#fields + 1] = v
    end
    fields[#fields + 1] = 'kpis'
    fields[#fields + 1] = kpis
    redis.call('HSET', KEYS[i], unpack(fields))
    redis.call('EXPIREAT', KEYS[i], at)
    redis.call('PUBLISH', channel, string.sub(head, 1, -2) .. ',"kpis":' .. kpis .. '}')
  else
    redis.call('DEL', KEYS[i])
    redis.call('PUBLISH', channel, string.sub(head, 1, -2) .. ',"kpis":{}}')
  end
end
return 0
"""

#: A rep's leaderboard entries of a round (those whose value or team changed), one call per
#: rep after every scope's values and messages of the round (a rep's ~20 entries per window
#: are most of Redis's work in a round: the update messages do not wait for them). ARGV: the
#: rep, then per window its expiry and its changes as JSON ``[key, score or false (remove),
#: ...]``. A leaderboard's expiry is set when a member is added to it (its key may have been
#: created then: also after another worker removed its last member), not at every score.
WRITE_BOARDS = """
local id = ARGV[1]
for a = 2, #ARGV, 2 do
  local at = ARGV[a]
  local boards = cjson.decode(ARGV[a + 1])
  for j = 1, #boards, 2 do
    if boards[j + 1] == false then
      redis.call('ZREM', boards[j], id)
    elseif redis.call('ZADD', boards[j], boards[j + 1], id) == 1 then
      redis.call('EXPIREAT', boards[j], at)
    end
  end
end
return 0
"""


def client(url: str, timeout: float, **kwargs: Any) -> Redis:
    """A client for ``url`` (``redis://`` or ``rediss://``, ``user:password@`` as usual) that
    fails fast: one retry, ``timeout`` seconds to connect and per command."""
    return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                          retry=Retry(NoBackoff(), 1), **kwargs)


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class RedisSink:
    def __init__(self, reader: Reader, readout: Readout, redis: Redis, layout: Layout,
                 fmt: SnapshotFormat, catalog: Catalog, *, interval: float, grace_seconds: float,
                 overdue: OverdueLeads, where: str = "", board_interval: float = 0.0,
                 clock: Callable[[], float] = time.time, pacing: Pacing = BACKLOG) -> None:
        self.reader = reader
        self.readout = readout
        self.redis = redis
        self.layout = layout
        self.fmt = fmt
        self.interval = interval
        self.grace = grace_seconds
        self.overdue = overdue
        self.where = where  # for logs, without credentials
        self.clock = clock
        #: window -> the rep KPIs (no dimensions) ranked in leaderboards of that window
        self.ranked = ranked_kpis(catalog)
        #: window -> (kpi, its values key (kpi,)) of :attr:`ranked`: the keys made once
        self._ranked_keys = {window: tuple((kpi, (kpi,)) for kpi in kpis)
                             for window, kpis in self.ranked.items()}
        self.up = False
        self.down_since: float | None = clock()
        self.last_error: str | None = None
        self.errors = 0
        self.resyncs = 0
        self.windows_written = 0
        self.stale_deleted = 0
        #: (rep, kind, start) -> (team, values, window end) as last written to the leaderboards
        self._ranked: dict[tuple[str, int, float], tuple[str, dict[tuple, float], float]] = {}
        self._pruned_at = clock()
        self._overdue_sent: dict[int, tuple[int, float]] = {}  # partition -> (digest, at)
        self._script_sha: str | None = None
        self._boards_sha: str | None = None
        #: leaderboard key names (window, start, kpi[, team]): the same few every round
        self._boards = _BoardNames(layout)
        self._bound_text: dict[tuple[float, float], tuple[str, str]] = {}
        self._takeovers = 0
        self._board_writes: asyncio.Future | None = None  # the last round's leaderboard writes
        #: leaderboards are written at most every board_interval seconds: of each rep window
        #: changed since, its latest values (rep, kind, start) -> update
        self.board_interval = board_interval
        self._board_pending: dict[tuple[str, int, float], WindowUpdate] = {}
        self._board_due = float("-inf")
        self._spent = 0.0  # this round's loop time building commands
        self._executed = 0.0  # and its pipelines' time (packing, Redis, the replies)
        self.rounds = Rounds(0.0, pacing, live=True, unit_cost=WINDOW_COST, learn_from=LEARN_WINDOWS)
        self._overdue_at = float("-inf")
        self._retry_at = float("-inf")

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                await self.tick()
        finally:
            if self._board_writes is not None:
                self._board_writes.cancel()
            await self.redis.aclose()

    async def tick(self) -> None:
        now = self.clock()
        if not self.rounds.due(now, self.reader.pending if self.up else None):
            return
        self._spent = self._executed = 0.0
        began = time.perf_counter()
        if self.up:
            updates = self.reader.changed()
        else:  # advance anyway (closed windows go), without building values nobody writes:
            self.reader.skip()  # the full write when Redis is back covers them
            updates = []
        read = time.perf_counter() - began  # the read-out: finishing the windows' values
        try:
            if self._board_writes is not None and self._board_writes.done():
                await self.boards_written()  # raises what they failed with
            if self.up and self.readout.takeovers() != self._takeovers:
                await self.resync(now)  # started, or took over partitions: clean what is ours
            elif self.up:
                await self._write(updates, now)
                if now >= self._overdue_at:
                    self._overdue_at = now + OVERDUE_EVERY
                    await self._write_overdue(now)
            elif now >= self._retry_at:
                self._retry_at = now + RETRY_EVERY
                await self.redis.ping()
                await self.resync(now)
        except (RedisError, OSError) as exc:
            self._failed(exc, now)
        # Paced by what the round took of the loop: reading the windows out, building the
        # commands, and redis-py packing them and reading the replies (not the wait for Redis):
        # at most as long as the building (measured: less with a call per scope), and at most
        # the pipelines' time.
        self.rounds.done(now, read + self._spent + min(self._spent, self._executed),
                         work=len(updates))

    def _failed(self, exc: BaseException, now: float) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.up:  # the first failure of an outage is logged, not every retry
            self.up = False
            self.down_since = now
            log.warning("Redis %s unavailable (%s): KPIs keep going to /metrics and sales.metrics; "
                        "Redis is written again, in full, once it answers", self.where, self.last_error)
        elif self.resyncs == 0 and self.errors == 1:
            log.warning("Redis %s not reachable yet (%s): trying every %.0f s",
                        self.where, self.last_error, RETRY_EVERY)

    # -- writing --------------------------------------------------------------------------
    async def resync(self, now: float) -> None:
        """Write every live window, delete what this worker owns that is stale, then follow
        the changes again."""
        takeovers = self.readout.takeovers()
        live = [u for u in self.reader.live() if not u.final]
        # a restart forgets them
        self._script_sha = await self.redis.script_load(WRITE_WINDOWS)
        self._boards_sha = await self.redis.script_load(WRITE_BOARDS)
        # an earlier round's leaderboard writes, before they are all written again (and before
        # what they rank is forgotten: they rank as they go, a pipeline at a time)
        await self.boards_written()
        self._ranked.clear()
        self._board_pending.clear()
        self._overdue_sent.clear()
        await self._write(live, now, wait=True)
        # While the roll-up stage still reads partitions it was given, what it lacks may only
        # be unread yet: the takeover's own full write deletes once it has read them.
        deleted = await self._delete_stale(live) if self.readout.settled() else 0
        await self._write_overdue(now)
        self._overdue_at = now + OVERDUE_EVERY
        self.resyncs += 1
        if self.resyncs == 1:
            why = " at start"
        elif self.down_since is not None:
            why = f" after {now - self.down_since:.1f} s unavailable"
        else:  # up all along: the roll-up stage has read partitions it took over
            why = " after the roll-up stage read the partitions it was given"
        self.stale_deleted += deleted
        self.up, self.down_since, self.last_error = True, None, None
        self._takeovers = takeovers
        log.info("Redis %s written in full%s: %d windows, %d stale keys or entries deleted",
                 self.where, why, len(live), deleted)

    async def _write(self, updates: list[WindowUpdate], now: float, *, wait: bool = False) -> None:
        """Write the changed windows' values and messages, then (in a task of its own, so
        that the next round's values need not wait for them) their leaderboard entries;
        ``wait``: wait for those too."""
        began = time.perf_counter()
        #: (scope, id) -> its changed windows: one script call per scope
        scopes: dict[tuple[str, str], list[WindowUpdate]] = {}
        pending = self._board_pending
        written = 0
        for u in updates:
            if u.final:  # its keys expire now by themselves
                self._ranked.pop((u.id, u.kind, u.start), None)
                pending.pop((u.id, u.kind, u.start), None)
                continue
            group = scopes.get((u.scope, u.id))
            if group is None:
                group = scopes[(u.scope, u.id)] = []
            group.append(u)
            if u.scope == "rep":
                pending[(u.id, u.kind, u.start)] = u
            written += 1
        self._spent += time.perf_counter() - began
        # The calls are built a pipeline at a time: a round's calls all at once (each window's
        # KPIs' JSON twice) were ~20 MB at the peak of a round of 1,000 reps (docs/benchmark.md)
        groups = list(scopes.values())
        del scopes
        for i in range(0, len(groups), CALLS_CHUNK):
            began = time.perf_counter()
            commands = [self._call(group, now) for group in groups[i:i + CALLS_CHUNK]]
            self._spent += time.perf_counter() - began
            await self._run(commands)
            del commands
        began = time.perf_counter()
        if now > self._pruned_at + 60:  # windows given away at a rebalance never come final
            self._pruned_at = now
            closed = now - 2 * self.grace
            for wkey in [k for k, v in self._ranked.items() if v[2] <= closed]:
                del self._ranked[wkey]
        self._spent += time.perf_counter() - began
        self.windows_written += written
        idle = self._board_writes is None or self._board_writes.done()
        if pending and (wait or (now >= self._board_due and idle)):
            # The leaderboard entries (most of Redis's work in a round) go out while the next
            # rounds' values do, after the last ones, at most every board_interval seconds.
            await self.boards_written()
            began = time.perf_counter()
            reps: dict[str, list[WindowUpdate]] = {}
            for u in pending.values():
                group = reps.get(u.id)
                if group is None:
                    group = reps[u.id] = []
                group.append(u)
            pending.clear()
            self._board_due = now + self.board_interval
            self._spent += time.perf_counter() - began
            self._board_writes = asyncio.ensure_future(self._write_boards(list(reps.values())))
            if wait:
                await self.boards_written()

    async def _write_boards(self, reps: list[list[WindowUpdate]]) -> None:
        """A :data:`WRITE_BOARDS` call per rep (its windows that changed since the last
        leaderboard write: its leaderboard changes in them), built and sent a pipeline of
        :data:`CALLS_CHUNK` reps at a time (all at once they were ~25 MB with 1,000 reps)."""
        for i in range(0, len(reps), CALLS_CHUNK):
            began = time.perf_counter()
            commands = []
            for group in reps[i:i + CALLS_CHUNK]:
                args: list[Any] = []
                for u in group:
                    changes: list[Any] = []
                    self._rank(u, changes)
                    if changes:
                        args += (math.ceil(u.end + 2 * self.grace), _JSON.encode(changes))
                if args:
                    commands.append((self._boards_sha, 0, group[0].id, *args))
            self._spent += time.perf_counter() - began
            if commands:
                await self._run(commands)

    async def boards_written(self) -> None:
        """Wait for the last round's leaderboard writes; their failure is the caller's (the
        round that waits: an outage, written again in full once Redis answers)."""
        task, self._board_writes = self._board_writes, None
        if task is not None:
            await task

    async def _run(self, commands: list[tuple[Any, ...]]) -> None:
        """Script calls in pipelines of :data:`CALLS_CHUNK`: their loop time (packing them,
        reading the replies) is at most their time, counted in ``_executed``."""
        for i in range(0, len(commands), CALLS_CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            for command in commands[i:i + CALLS_CHUNK]:
                pipe.evalsha(*command)
            began = time.perf_counter()
            try:
                await pipe.execute()
            finally:
                self._executed += time.perf_counter() - began

    def _call(self, group: list[WindowUpdate], now: float) -> tuple[Any, ...]:
        """The script call (:data:`WRITE_WINDOWS`) that writes one scope's changed windows."""
        call: tuple[list[str], list[Any]] = ([], [])
        for u in group:
            self._put(call, u, now)
        keys, args = call
        return (self._script_sha, len(keys), *keys, *args)

    def _put(self, call: tuple[list[str], list[Any]], u: WindowUpdate, now: float) -> None:
        """Add one window's write to its scope's script call (:data:`WRITE_WINDOWS`)."""
        layout, fmt = self.layout, self.fmt
        window = u.window
        expires = math.ceil(u.end + 2 * self.grace)
        record: dict[str, Any] = {"scope": u.scope, "id": u.id}
        if u.scope == "rep":
            record["team"] = u.team or UNASSIGNED
        kpis = fmt.kpis(u.kind, u.values)
        start_text, end_text = self._bounds(u.start, u.end)
        record.update({
            "window": window, "window_start": start_text,
            "window_end": end_text, "updated_at": rfc3339(now),
        })
        keys, args = call
        keys.append(layout.kpis(window, u.start, u.scope, u.id))
        args += (expires, layout.channel(u.scope, window, u.id), _JSON.encode(record),
                 _JSON.encode(kpis) if kpis else b"")

    def _bounds(self, start: float, end: float) -> tuple[str, str]:
        """A window's start and end as RFC 3339 text (the same few windows every round)."""
        text = self._bound_text.get((start, end))
        if text is None:
            if len(self._bound_text) > 4096:
                self._bound_text.clear()
            tz = self.fmt.tz
            text = self._bound_text[(start, end)] = (rfc3339(start, tz), rfc3339(end, tz))
        return text

    def _rank(self, u: WindowUpdate, boards: list[Any]) -> None:
        """The rep's entries in the leaderboards of its window: those whose value or team
        changed since they were last written; a team change moves the rep between boards."""
        window = u.window
        layout = self._boards
        team = u.team or UNASSIGNED
        wkey = (u.id, u.kind, u.start)
        before_team, before, _ = self._ranked.get(wkey, (team, {}, u.end))
        moved = before_team != team
        get, before_get = u.values.get, before.get
        for kpi, key in self._ranked_keys[window]:
            value = get(key)
            if value is not None and not math.isfinite(value):
                value = None
            old = before_get(key)
            if value is None:
                if old is not None:
                    boards += (layout.board(window, u.start, kpi), False,
                               layout.board(window, u.start, kpi, before_team), False)
                continue
            if moved and old is not None:
                boards += (layout.board(window, u.start, kpi, before_team), False)
            if value == old and not moved:
                continue
            boards += (layout.board(window, u.start, kpi), value,
                       layout.board(window, u.start, kpi, team), value)
        self._ranked[wkey] = (team, u.values, u.end)

    async def _delete_stale(self, live: list[WindowUpdate]) -> int:
        """Delete the keys and leaderboard entries of scopes this worker owns that no live
        window holds (written before a restart or before Redis came back with old data)."""
        layout, owns = self.layout, self.readout.owns
        held = {(u.window, int(u.start), u.scope, u.id) for u in live}
        stale = []
        async for raw in self.redis.scan_iter(match=layout.kpis_pattern(), count=1000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            k = layout.parse_kpis(key)
            if k is not None and tuple(k) not in held and owns(k.id):
                stale.append(key)
        deleted = len(stale)
        for i in range(0, len(stale), PIPELINE_CHUNK):
            await self.redis.delete(*stale[i:i + PIPELINE_CHUNK])
        ranked = {(u.window, int(u.start), u.id): (u.team or UNASSIGNED, u.values)
                  for u in live if u.scope == "rep"}
        boards = []
        for pattern in layout.board_patterns():
            async for raw in self.redis.scan_iter(match=pattern, count=1000):
                key = raw.decode() if isinstance(raw, bytes) else raw
                parsed = layout.parse_board(key)
                if parsed is not None:
                    boards.append((key, parsed))
        for i in range(0, len(boards), 500):
            chunk = boards[i:i + 500]
            pipe = self.redis.pipeline(transaction=False)
            for key, _ in chunk:
                pipe.zrange(key, 0, -1)
            members = await pipe.execute()
            pipe = self.redis.pipeline(transaction=False)
            for (key, (window, start, kpi, team)), reps in zip(chunk, members, strict=True):
                for raw in reps:
                    rep = raw.decode() if isinstance(raw, bytes) else raw
                    if not owns(rep):
                        continue
                    mine = ranked.get((window, start, rep))
                    if mine is None or mine[1].get((kpi,)) is None or (team is not None and team != mine[0]):
                        pipe.zrem(key, rep)
                        deleted += 1
            if len(pipe):
                await pipe.execute()
        return deleted

    async def _write_overdue(self, now: float) -> None:
        """Each owned aggregate partition's overdue leads, replaced whole (MULTI), when they
        changed or every :data:`OVERDUE_REFRESH` seconds."""
        pipe = self.redis.pipeline(transaction=True)
        sent = []
        for partition, leads in self.overdue().items():
            digest = hash(frozenset(leads.items()))
            last = self._overdue_sent.get(partition)
            if last is not None and last[0] == digest and now < last[1] + OVERDUE_REFRESH:
                continue
            key = self.layout.overdue(partition)
            pipe.delete(key)
            if leads:
                pipe.hset(key, mapping=dict(leads))
                pipe.expire(key, OVERDUE_TTL)
            sent.append((partition, digest))
        if sent:
            await pipe.execute()
        for partition, digest in sent:
            self._overdue_sent[partition] = (digest, now)

    # -- health ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``synced``: up, and written in full since the roll-up stage last finished reading
        partitions it was given (until then, a start or a rebalance has a full write to come)."""
        synced = (self.up and self.readout.settled()
                  and self._takeovers == self.readout.takeovers())
        return {"up": self.up, "down_since": rfc3339(self.down_since) if self.down_since else None,
                "last_error": self.last_error, "resyncs": self.resyncs, "synced": synced}

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("salespulse_redis_up",
                                "1 while the Redis sink writes, 0 while Redis is unavailable.",
                                value=1.0 if self.up else 0.0)
        yield CounterMetricFamily("salespulse_redis_errors",
                                  "Failed Redis writes and connection attempts.", value=self.errors)
        yield CounterMetricFamily("salespulse_redis_resyncs",
                                  "Times Redis was written in full (at start and after an outage).",
                                  value=self.resyncs)
        yield CounterMetricFamily("salespulse_redis_windows_written",
                                  "Window values written to Redis.", value=self.windows_written)
        yield CounterMetricFamily("salespulse_redis_stale_deleted",
                                  "Stale keys and leaderboard entries deleted at full writes.",
                                  value=self.stale_deleted)


class _BoardNames:
    """:meth:`Layout.board`, remembered: a round names each board of a window once per rep."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._names: dict[tuple, str] = {}

    def board(self, window: str, start: float, kpi: str, team: str | None = None) -> str:
        key = (window, start, kpi, team)
        name = self._names.get(key)
        if name is None:
            if len(self._names) > 65536:  # windows move on: forget the old ones now and then
                self._names.clear()
            name = self._names[key] = self.layout.board(window, start, kpi, team)
        return name


def lead_json(lead_id: str, rep: str | None, team: str, created: float | None) -> bytes:
    return _JSON.encode({"lead_id": lead_id, "rep_id": rep, "team_id": team, "created": created,
                         "created_time": rfc3339(created) if created is not None else None})
