"""The JSON API under /api/: every page's data, for scripts too (with an API token).

Documented by FastAPI's OpenAPI generator, served (to a logged-in user or a token) at
/api/openapi.json. Errors: 400 for a query or request the console cannot answer, 401 without a
session or token, 403 without the role or the CSRF token, 404 for what is unknown or outside the
user's scope (the two are not told apart), 429 while logins are rate limited.
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime
from typing import Annotated, Any, AsyncIterator, Callable, Final, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from ctrail.audit.trail import period, record
from ctrail.cli.common import field
from ctrail.cli.search import COLUMNS as SEARCH_COLUMNS
from ctrail.console import operations
from ctrail.console.auth import (
    Authenticator,
    LoginRefused,
    Principal,
    client_address,
    set_session_cookie,
)
from ctrail.console.data import AlertFilter, ConsoleData, alert_id, group_alerts, now
from ctrail.console.users import Role
from ctrail.query import parse_time

EXPORT_MAX: Final = 100_000
KEEPALIVE_SECS: Final = 15.0


class Login(BaseModel):
    user: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000)


class Triage(BaseModel):
    action: Literal["acknowledge", "assign", "note", "close", "reopen"]
    assignee: str | None = Field(None, max_length=200)
    note: str | None = Field(None, max_length=10_000)
    reason: Literal["true_positive", "benign", "duplicate"] | None = None


def principal(request: Request) -> Principal:
    """Set by the gate (auth.Gate) before any route runs."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:               # unreachable behind the gate; a second lock
        raise HTTPException(401, "authentication required")
    return found


def role(needed: Role) -> Callable[[Request], Principal]:
    def check(request: Request) -> Principal:
        found = principal(request)
        if not found.may(needed):
            raise HTTPException(403, f"this needs the {needed.value} role")
        return found
    return check


def unscoped(needed: Role) -> Callable[[Request], Principal]:
    """Reports and evidence span every namespace: only users without a scope see them."""
    def check(request: Request) -> Principal:
        found = role(needed)(request)
        if found.user.scoped:
            raise HTTPException(403, "reports and evidence cover every namespace: a user "
                                "limited to namespaces or clusters cannot see them")
        return found
    return check


Who = Annotated[Principal, Depends(principal)]
Responder = Annotated[Principal, Depends(role(Role.RESPONDER))]
Admin = Annotated[Principal, Depends(role(Role.ADMIN))]
AllScopes = Annotated[Principal, Depends(unscoped(Role.VIEWER))]
AllScopesAdmin = Annotated[Principal, Depends(unscoped(Role.ADMIN))]


def time_of(text: str | None) -> datetime | None:
    return parse_time(text) if text else None


def build_router(data: ConsoleData, auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.post("/login", summary="Log in: sets the session cookie, returns the CSRF token")
    def login(body: Login, request: Request) -> JSONResponse:
        try:
            found = auth.login(body.user, body.password, client_address(request))
        except LoginRefused as exc:
            raise HTTPException(exc.status, str(exc)) from None
        response = JSONResponse({"user": found.user.public(), "csrf": found.csrf})
        set_session_cookie(response, found, auth.config)
        return response

    @router.post("/logout", summary="End this session")
    def logout(who: Who, request: Request) -> JSONResponse:
        auth.logout(who, client_address(request))
        response = JSONResponse({"logged_out": True})
        response.delete_cookie("ctrail_session", path="/")
        return response

    @router.get("/me", summary="Who is asking, with role and scope")
    def me(who: Who) -> dict[str, Any]:
        return {"user": who.user.public(), "via": who.via}

    @router.get("/search", summary="Search events (Lucene syntax), as `ctrail search`")
    def search(who: Who, q: str = "*", time_from: Annotated[str | None, Query(alias="from")] = None,
               to: str | None = None, limit: int = Query(100, ge=1, le=10_000)
               ) -> dict[str, Any]:
        docs = data.search(who.user, q, time_of(time_from), time_of(to), limit)
        return {"query": q, "count": len(docs), "events": docs}

    @router.get("/suggest", summary="Field names for the search box, from events in scope")
    def suggest(who: Who, prefix: str = "") -> dict[str, Any]:
        return {"fields": data.suggest(who.user, prefix)}

    @router.get("/events/{event_id}", summary="One event, raw record and ECS fields")
    def event(who: Who, event_id: str) -> dict[str, Any]:
        doc = data.event(who.user, event_id)
        if doc is None:
            raise HTTPException(404, "no such event in your scope")
        return doc

    @router.get("/alerts", summary="Alerts with their triage state, newest last")
    def alerts(who: Who, q: str = "*", severity: str | None = None, rule: str | None = None,
               namespace: str | None = None,
               time_from: Annotated[str | None, Query(alias="from")] = None,
               to: str | None = None, limit: int = Query(200, ge=1, le=10_000),
               group: bool = False) -> dict[str, Any]:
        wanted = AlertFilter(q, severity, rule, namespace, time_of(time_from), time_of(to), limit)
        docs = data.alerts(who.user, wanted)
        docs = group_alerts(docs) if group else docs
        return {"count": len(docs), "alerts": docs}

    @router.get("/alerts/stream", summary="New alerts as server-sent events (event: alert)")
    async def stream(who: Who, request: Request) -> StreamingResponse:
        return StreamingResponse(_live(data, auth, who, request), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    @router.get("/alerts/{alert}", summary="One alert with its triage history")
    def one_alert(who: Who, alert: str) -> dict[str, Any]:
        doc = data.alert(who.user, alert)
        if doc is None:
            raise HTTPException(404, "no such alert in your scope")
        return doc

    @router.post("/alerts/{alert}/triage", summary="Acknowledge, assign, note, close or reopen")
    def triage(who: Responder, alert: str, body: Triage) -> dict[str, Any]:
        detail = body.model_dump(exclude={"action"}, exclude_none=True)
        try:
            return data.triage(who.user, alert, body.action, detail)
        except LookupError:
            raise HTTPException(404, "no such alert in your scope") from None

    @router.get("/timeline", summary="A subject's card and events, as `ctrail timeline`")
    def timeline(who: Who, kind: Literal["container", "pod", "image", "user"],
                 value: str = Query(min_length=1), limit: int = Query(10_000, ge=1, le=100_000)
                 ) -> dict[str, Any]:
        subject, docs = data.timeline(who.user, kind, value, limit)
        return {"subject": subject, "events": docs}

    @router.get("/export", summary="A search's events as JSON Lines or CSV")
    def export(who: Who, q: str = "*", time_from: Annotated[str | None, Query(alias="from")] = None,
               to: str | None = None, limit: int = Query(10_000, ge=1, le=EXPORT_MAX),
               format: Literal["jsonl", "csv"] = "jsonl") -> Response:
        start, end = time_of(time_from), time_of(to)
        docs = data.store.search(data.events_query(q, who.user), "events", start, end, limit)
        record(data.settings, "console-export", {"query": q, **period(start, end), "limit": limit,
                                                 "format": format, "results": len(docs)},
               user=who.user.name)
        if format == "csv":
            return Response(csv_text(docs), media_type="text/csv", headers={
                "Content-Disposition": 'attachment; filename="ctrail-export.csv"'})
        body = b"".join(orjson.dumps(doc) + b"\n" for doc in docs)
        return Response(body, media_type="application/x-ndjson", headers={
            "Content-Disposition": 'attachment; filename="ctrail-export.jsonl"'})

    @router.get("/reports", summary="Reports and their rendered files (unscoped users)")
    def report_list(who: AllScopes) -> dict[str, Any]:
        return {"reports": operations.reports(data.settings)}

    @router.post("/reports/{name}/run", summary="Render a report now (admin)")
    def report_run(who: AllScopesAdmin, name: str) -> dict[str, Any]:
        return {"report": name, "files": operations.run_now(data.settings, name, who.user)}

    @router.get("/evidence", summary="The evidence archive's last verification")
    def evidence(who: AllScopes) -> dict[str, Any]:
        return {"configured": data.settings.evidence is not None,
                "last_verification": operations.last_verification(data.store)}

    @router.post("/evidence/verify", summary="Verify the evidence archive now (admin)")
    def evidence_verify(who: AllScopesAdmin) -> dict[str, Any]:
        if data.settings.evidence is None:
            raise HTTPException(400, "no evidence archive is configured (evidence:)")
        return operations.verify_now(data.config_path, data.settings.data_dir, who.user,
                                     data.settings)

    @router.get("/users", summary="Console users (admin)")
    def users(who: Admin) -> dict[str, Any]:
        return {"users": [u.public() for u in data.db.users()]}

    return router


async def _live(data: ConsoleData, auth: Authenticator, who: Principal,
                request: Request) -> AsyncIterator[bytes]:
    """New alerts in the user's scope until the client goes, or the session or token stops
    being valid (a logout elsewhere ends the stream too)."""
    since, seen = now(), set[str]()
    quiet = 0.0
    poll = auth.config.live_poll_secs
    yield b"retry: 2000\n\n"
    while not await request.is_disconnected():
        if auth.principal(request) is None:
            yield b"event: ended\ndata: {}\n\n"
            return
        found = await run_in_threadpool(data.new_alerts, who.user, since, seen)
        for doc in found:
            seen.add(alert_id(doc))
            yield b"event: alert\ndata: " + orjson.dumps(doc) + b"\n\n"
        quiet = 0.0 if found else quiet + poll
        if quiet >= KEEPALIVE_SECS:
            quiet = 0.0
            yield b": keep-alive\n\n"
        await asyncio.sleep(poll)


def csv_text(docs: list[dict[str, Any]]) -> str:
    """The search table's columns and the event id. A cell that a spreadsheet would run as a
    formula (=, +, -, @ first) is prefixed with a quote."""
    out = io.StringIO()
    writer = csv.writer(out)
    columns = (("id", "event.id"), *SEARCH_COLUMNS)
    writer.writerow(header for header, _path in columns)
    for doc in docs:
        writer.writerow(_cell(field(doc, path)) for _header, path in columns)
    return out.getvalue()


def _cell(value: Any) -> str:
    text = "" if value is None else (", ".join(map(str, value)) if isinstance(value, list)
                                     else str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
