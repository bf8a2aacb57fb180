"""The HTTP API (SPEC section 3), read-only JSON answered from Redis, so any worker answers.

    GET /api/v1/reps/{rep_id}, /api/v1/teams/{team_id}, /api/v1/org   ?window=day
    GET /api/v1/leaderboards/{kpi}   ?window=day&team=&limit=10
    GET /api/v1/leads/overdue        ?team=
    GET /api/v1/stream               ?scope=org,team&id=&window=    (Server-Sent Events)
    GET /board                       the live board (streams/board.html)

The values are the current window's, as on /metrics: a scope that had values in the previous
window and none yet in this one shows its counted KPIs at 0. Described in ``docs/openapi.json``.
Errors are JSON ``{"error": ...}``: 400 for a bad parameter, 404 for an unknown KPI or id, 503
while Redis is unavailable (or not configured).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from metrics.catalog import Catalog
from metrics.snapshots import rfc3339
from metrics.windows import WINDOW_KINDS, Calendar
from streams.redis_layout import ORG_ID, Layout, ranked_kpis

log = logging.getLogger(__name__)

MAX_LIMIT = 100
MAX_ID = 128
KEEPALIVE_SECONDS = 15.0
Handler = Callable[..., Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _str(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class Api:
    def __init__(self, redis: Redis | None, layout: Layout, catalog: Catalog, calendar: Calendar,
                 *, partitions: int, waited: Callable[[str | None, float, float], float],
                 sla_seconds: float, max_streams: int, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.layout = layout
        self.calendar = calendar
        self.partitions = partitions
        self.waited = waited
        self.sla = sla_seconds
        self.max_streams = max_streams
        self.clock = clock
        self.streams = 0
        self._streaming: set[asyncio.Task] = set()
        self._closing = False
        self.stored = frozenset(k.name for k in catalog.stored)
        #: window -> the KPIs ranked in leaderboards of that window (as the Redis sink writes)
        self.ranked = ranked_kpis(catalog)
        self.kpis = frozenset(k.name for k in catalog.kpis if k.exported)
        self.board_html = resources.files("streams").joinpath("board.html").read_bytes()

    def routes(self) -> list[tuple[str, Handler]]:
        return [
            ("/api/v1/reps/{rep_id}", self.rep),
            ("/api/v1/teams/{team_id}", self.team),
            ("/api/v1/org", self.org),
            ("/api/v1/leaderboards/{kpi}", self.leaderboard),
            ("/api/v1/leads/overdue", self.overdue),
            ("/api/v1/stream", self.stream),
            ("/board", self.board),
        ]

    # -- helpers ----------------------------------------------------------------------------
    def _client(self) -> Redis:
        if self.redis is None:
            raise ApiError(503, "the Redis serving layer is not configured (SALESPULSE_REDIS_URL)")
        return self.redis

    @staticmethod
    def _window(request: web.Request) -> str:
        window = request.query.get("window", "day")
        if window not in WINDOW_KINDS:
            raise ApiError(400, f"unknown window {window!r}: one of {', '.join(WINDOW_KINDS)}")
        return window

    @staticmethod
    def _id(value: str, what: str) -> str:
        if not 1 <= len(value) <= MAX_ID:
            raise ApiError(400, f"{what} must be 1 to {MAX_ID} characters")
        return value

    @staticmethod
    def _only(request: web.Request, allowed: set[str]) -> None:
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            raise ApiError(400, f"unknown parameter {unknown[0]!r}: "
                           f"{', '.join(sorted(allowed)) or 'none'} allowed")

    @staticmethod
    def _json(body: Any, status: int = 200) -> web.Response:
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})

    async def _answer(self, fn: Callable[[], Awaitable[Any]]) -> web.StreamResponse:
        try:
            result = await fn()
        except ApiError as exc:
            return self._json({"error": exc.message}, exc.status)
        except (RedisError, OSError) as exc:
            return self._json({"error": f"Redis is unavailable: {type(exc).__name__}"}, 503)
        return result if isinstance(result, web.StreamResponse) else self._json(result)

    # -- scopes ---------------------------------------------------------------------------
    async def rep(self, request: web.Request, rep_id: str) -> web.StreamResponse:
        return await self._answer(lambda: self._scope(request, "rep", self._id(rep_id, "rep_id")))

    async def team(self, request: web.Request, team_id: str) -> web.StreamResponse:
        return await self._answer(lambda: self._scope(request, "team", self._id(team_id, "team_id")))

    async def org(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(lambda: self._scope(request, "org", ORG_ID))

    async def _scope(self, request: web.Request, scope: str, scope_id: str) -> dict[str, Any]:
        self._only(request, {"window"})
        window = self._window(request)
        found = await self.current(scope, scope_id, window)
        if found is None:
            what = "the organisation" if scope == "org" else f"{scope} {scope_id!r}"
            raise ApiError(404, f"no values for {what} in the current or the previous {window}")
        return found

    async def current(self, scope: str, scope_id: str, window: str) -> dict[str, Any] | None:
        """The scope's values in the current window; if it has none yet but had some in the
        previous one, its counted KPIs at 0 (as /metrics shows them); else None."""
        redis = self._client()
        start, end = self.calendar.bounds(window, self.clock())
        prev_start, _ = self.calendar.bounds(window, start - 1.0)
        pipe = redis.pipeline(transaction=False)
        pipe.hgetall(self.layout.kpis(window, start, scope, scope_id))
        pipe.hgetall(self.layout.kpis(window, prev_start, scope, scope_id))
        now_fields, prev_fields = await pipe.execute()
        if now_fields:
            return self._record(now_fields)
        if not prev_fields:
            return None
        record = self._record(prev_fields)
        record["kpis"] = {k: _zero(v) for k, v in record["kpis"].items() if k in self.stored}
        record["window_start"] = rfc3339(start, self.calendar.tz)
        record["window_end"] = rfc3339(end, self.calendar.tz)
        return record

    @staticmethod
    def _record(fields: dict) -> dict[str, Any]:
        f = {_str(k): _str(v) for k, v in fields.items()}
        out: dict[str, Any] = {"scope": f["scope"], "id": f["id"]}
        if f["scope"] == "rep":
            out["team"] = f.get("team")
        out.update({"window": f["window"], "window_start": f["window_start"],
                    "window_end": f["window_end"], "updated_at": f["updated_at"],
                    "kpis": json.loads(f["kpis"])})
        return out

    # -- leaderboards -----------------------------------------------------------------------
    async def leaderboard(self, request: web.Request, kpi: str) -> web.StreamResponse:
        return await self._answer(lambda: self._leaderboard(request, kpi))

    async def _leaderboard(self, request: web.Request, kpi: str) -> dict[str, Any]:
        self._only(request, {"window", "team", "limit"})
        window = self._window(request)
        if kpi not in self.kpis:
            raise ApiError(404, f"unknown KPI {kpi!r}")
        if kpi not in self.ranked[window]:
            windows = [w for w in WINDOW_KINDS if kpi in self.ranked[w]]
            raise ApiError(400, f"KPI {kpi!r} has no rep leaderboard for window {window!r}"
                           + (f" (windows: {', '.join(windows)})" if windows else ""))
        raw_limit = request.query.get("limit", "10")
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, f"limit must be a whole number from 1 to {MAX_LIMIT}, got {raw_limit!r}")
        team = request.query.get("team")
        if team is not None:
            self._id(team, "team")
        redis = self._client()
        start, _ = self.calendar.bounds(window, self.clock())
        if team is not None and await self.current("team", team, window) is None:
            raise ApiError(404, f"no values for team {team!r} in the current or the previous {window}")
        ranked = await redis.zrevrange(self.layout.board(window, start, kpi, team), 0, limit - 1,
                                       withscores=True)
        pipe = redis.pipeline(transaction=False)
        for rep, _ in ranked:
            pipe.hget(self.layout.kpis(window, start, "rep", _str(rep)), "team")
        teams = await pipe.execute() if ranked else []
        entries, rank, last = [], 0, None
        for i, ((rep, value), rep_team) in enumerate(zip(ranked, teams, strict=True)):
            if value != last:  # ties share a rank (1, 2, 2, 4)
                rank, last = i + 1, value
            entries.append({"rank": rank, "rep": _str(rep),
                            "team": _str(rep_team) if rep_team is not None else team,
                            "value": value})
        body: dict[str, Any] = {"kpi": kpi, "window": window,
                                "window_start": rfc3339(start, self.calendar.tz)}
        if team is not None:
            body["team"] = team
        body["entries"] = entries
        return body

    # -- overdue leads ----------------------------------------------------------------------
    async def overdue(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(lambda: self._overdue(request))

    async def _overdue(self, request: web.Request) -> dict[str, Any]:
        self._only(request, {"team"})
        team = request.query.get("team")
        if team is not None:
            self._id(team, "team")
        redis = self._client()
        pipe = redis.pipeline(transaction=False)
        for partition in range(self.partitions):
            pipe.hgetall(self.layout.overdue(partition))
        now = self.clock()
        leads = []
        for fields in await pipe.execute():
            for raw in fields.values():
                lead = json.loads(raw)
                if team is not None and lead["team_id"] != team:
                    continue
                created = lead.pop("created")
                lead["waited_seconds"] = round(self.waited(lead["team_id"], created, now), 3) \
                    if created is not None else None
                leads.append(lead)
        leads.sort(key=lambda d: (-(d["waited_seconds"] or 0.0), d["lead_id"]))
        body: dict[str, Any] = {"sla_seconds": self.sla, "count": len(leads), "leads": leads}
        if team is not None:
            body = {"team": team, **body}
        return body

    # -- live updates -----------------------------------------------------------------------
    async def stream(self, request: web.Request) -> web.StreamResponse:
        try:
            patterns, snapshot = self._stream_args(request)
            redis = self._client()
        except ApiError as exc:
            return self._json({"error": exc.message}, exc.status)
        if request.method == "HEAD":  # headers only: no stream to hold open
            return web.Response(headers={"Content-Type": "text/event-stream",
                                         "Cache-Control": "no-store"})
        if self.streams >= self.max_streams:
            return self._json({"error": f"too many live streams on this worker ({self.max_streams})"}, 503)
        self.streams += 1
        task = asyncio.current_task()
        if task is not None:
            self._streaming.add(task)
        pubsub = redis.pubsub()
        response: web.StreamResponse | None = None
        try:
            try:
                await pubsub.psubscribe(*patterns)
                first = [await self.current(s, i, w) for s, i, w in await self._snapshot(snapshot)]
            except (RedisError, OSError) as exc:
                return self._json({"error": f"Redis is unavailable: {type(exc).__name__}"}, 503)
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-store",
                "X-Accel-Buffering": "no"})
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            for record in first:
                if record is not None:
                    await response.write(b"event: snapshot\ndata: " + json.dumps(record).encode() + b"\n\n")
            while True:
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=KEEPALIVE_SECONDS)
                except (RedisError, OSError):
                    await response.write(b"event: error\ndata: {\"error\": \"Redis is unavailable\"}\n\n")
                    return response  # the browser reconnects (retry) and gets a snapshot
                if message is None:
                    await response.write(b": keepalive\n\n")
                    continue
                data = message["data"]
                await response.write(b"event: update\ndata: " + (data if isinstance(data, bytes) else data.encode()) + b"\n\n")
        except ConnectionResetError:  # the client went away
            return response
        except asyncio.CancelledError:
            if not self._closing or response is None:
                raise
            # the worker stops: end the stream properly; the browser reconnects elsewhere
            with contextlib.suppress(ConnectionResetError):
                await response.write(b"event: end\ndata: {}\n\n")
                await response.write_eof()
            return response
        finally:
            self.streams -= 1
            self._streaming.discard(task)  # type: ignore[arg-type]
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def close_streams(self, app: Any = None) -> None:
        """End every live stream (the web server's shutdown waits for open requests, and a
        stream never ends by itself: a worker with a board open would not stop)."""
        self._closing = True
        for task in list(self._streaming):
            task.cancel()

    def _stream_args(self, request: web.Request) -> tuple[list[str], tuple]:
        self._only(request, {"scope", "id", "window"})
        raw_scopes = request.query.get("scope")
        scopes = raw_scopes.split(",") if raw_scopes else ["rep", "team", "org"]
        for scope in scopes:
            if scope not in ("rep", "team", "org"):
                raise ApiError(400, f"unknown scope {scope!r}: rep, team or org (comma-separated)")
        window = request.query.get("window")
        if window is not None and window not in WINDOW_KINDS:
            raise ApiError(400, f"unknown window {window!r}: one of {', '.join(WINDOW_KINDS)}")
        scope_id = request.query.get("id")
        if scope_id is not None:
            self._id(scope_id, "id")
            if len(scopes) != 1 or scopes[0] == "org":
                raise ApiError(400, "id needs exactly one scope, rep or team")
        patterns = [self.layout.channel_pattern(s, window, ORG_ID if s == "org" else scope_id)
                    for s in scopes]
        return patterns, (tuple(scopes), scope_id, window or "day")

    async def _snapshot(self, wanted: tuple) -> list[tuple[str, str, str]]:
        """The (scope, id, window) whose current values open a stream: the org, every team
        with values in the window (when asked for teams), or the one id asked for."""
        scopes, scope_id, window = wanted
        out = []
        if scope_id is not None:
            return [(scopes[0], scope_id, window)]
        if "org" in scopes:
            out.append(("org", ORG_ID, window))
        if "team" in scopes:
            start, _ = self.calendar.bounds(window, self.clock())
            pattern = self.layout.kpis(window, start, "team", "*")
            async for raw in self._client().scan_iter(match=pattern, count=1000):
                parsed = self.layout.parse_kpis(_str(raw))
                if parsed is not None:
                    out.append(("team", parsed.id, window))
        return out

    # -- board ------------------------------------------------------------------------------
    async def board(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.board_html, headers={
            "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
        })


def _zero(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _zero(v) for k, v in value.items()}
    return 0.0
