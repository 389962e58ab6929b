"""Server-rendered pages (jinja2, autoescaped: a value from an event is always shown as text).

Each page reads through ConsoleData, as the JSON API does; static/console.js adds the live
alert stream, the triage buttons and logout (state changes go to the API with the CSRF token).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

import jinja2
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ctrail.cli.alerts import COLUMNS as ALERT_COLUMNS
from ctrail.cli.common import field
from ctrail.cli.search import COLUMNS as SEARCH_COLUMNS
from ctrail.cli.timeline import COLUMNS as TIMELINE_COLUMNS
from ctrail.console import operations
from ctrail.console.api import principal, time_of, unscoped
from ctrail.console.auth import (
    Authenticator,
    LoginRefused,
    Principal,
    client_address,
    set_session_cookie,
)
from ctrail.console.data import CLOSE_REASONS, AlertFilter, ConsoleData, flatten, group_alerts
from ctrail.console.graph import picture
from ctrail.console.oidc import OidcClient, OidcError, Pending
from ctrail.console.users import Role
from ctrail.errors import QueryError, UsageError
from sinks.reports.render import draw

MAX_LOGIN_BODY = 4096


def templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.PackageLoader("ctrail.console", "templates"),
                             autoescape=True, undefined=jinja2.ChainableUndefined)
    env.filters["field"] = lambda doc, path: _shown(field(doc, path))
    env.filters["when"] = lambda epoch: datetime.fromtimestamp(epoch, timezone.utc).isoformat(
        timespec="seconds")
    env.filters["json"] = lambda value: orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    return Jinja2Templates(env=env)


def _shown(value: Any) -> str:
    if value is None:
        return ""
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def build_pages(data: ConsoleData, auth: Authenticator) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    views = templates()
    oidc = OidcClient(auth.config.oidc) if auth.config.oidc is not None else None

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        who = getattr(request.state, "principal", None)
        return views.TemplateResponse(request, name, {"who": who, "sso": oidc is not None,
                                                      **context},
                                      status_code=status)

    def signed_in(found: Principal) -> Response:
        """To the alerts, with the new session's cookie (password or single sign-on)."""
        response = RedirectResponse("/alerts", status_code=303)
        set_session_cookie(response, found, auth.config)
        return response

    @router.get("/login")
    def login_form(request: Request) -> HTMLResponse:
        return page(request, "login.html", message=None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        body = (await request.body())[:MAX_LOGIN_BODY].decode(errors="replace")
        form = {k: v[0] for k, v in parse_qs(body).items()}
        try:
            found = auth.login(form.get("user", ""), form.get("password", ""),
                               client_address(request))
        except LoginRefused as exc:
            return page(request, "login.html", status=exc.status, message=str(exc))
        return signed_in(found)

    @router.get("/login/oidc")
    def oidc_start(request: Request) -> Response:
        if oidc is None:
            return page(request, "login.html", status=404, message="single sign-on is not "
                        "configured")
        try:
            url, state, pending = oidc.start()
        except OidcError as exc:
            return page(request, "login.html", status=502, message=str(exc))
        auth.db.add_oidc_pending(state, pending.nonce, pending.verifier, pending.expires)
        return RedirectResponse(url, status_code=303)

    @router.get("/login/oidc/callback")
    def oidc_callback(request: Request, code: str = "", state: str = "") -> Response:
        kept = auth.db.take_oidc_pending(state) if state else None
        if oidc is None or kept is None or not code:
            return page(request, "login.html", status=400, message="this sign-on link is not "
                        "valid (used already, expired or forged): start again")
        try:
            name = oidc.finish(code, Pending(*kept))
            found = auth.login_vouched(name, client_address(request), "oidc")
        except OidcError as exc:
            return page(request, "login.html", status=401, message=str(exc))
        except LoginRefused as exc:
            return page(request, "login.html", status=exc.status, message=str(exc))
        return signed_in(found)

    @router.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/alerts", status_code=303)

    @router.get("/alerts")
    def alerts(request: Request, q: str = "*", severity: str = "", rule: str = "",
               namespace: str = "", time_from: str = "", to: str = "",
               group: str = "") -> HTMLResponse:
        who = principal(request)
        try:
            wanted = AlertFilter(q or "*", severity or None, rule or None, namespace or None,
                                 time_of(time_from), time_of(to))
            docs, error = data.alerts(who.user, wanted), None
        except (QueryError, UsageError) as exc:
            docs, error = [], str(exc)
        docs = group_alerts(docs) if group else docs
        return page(request, "alerts.html", alerts=docs[::-1], columns=ALERT_COLUMNS,
                    error=error, filters={"q": q, "severity": severity, "rule": rule,
                                          "namespace": namespace, "time_from": time_from,
                                          "to": to, "group": group},
                    can_triage=who.may(Role.RESPONDER))

    @router.get("/alerts/{alert}")
    def alert(request: Request, alert: str) -> HTMLResponse:
        who = principal(request)
        doc = data.alert(who.user, alert)
        if doc is None:
            return page(request, "missing.html", status=404, what="alert")
        return page(request, "alert.html", alert=doc, reasons=CLOSE_REASONS,
                    can_triage=who.may(Role.RESPONDER))

    @router.get("/search")
    def search(request: Request, q: str = "", time_from: str = "", to: str = "",
               limit: int = 100) -> HTMLResponse:
        who = principal(request)
        docs: list[dict[str, Any]] = []
        error = None
        if q:
            try:
                docs = data.search(who.user, q, time_of(time_from), time_of(to),
                                   max(1, min(limit, 10_000)))
            except (QueryError, UsageError) as exc:
                error = str(exc)
        chart = data.histogram(who.user, q, time_of(time_from), time_of(to), docs) \
            if docs else None
        return page(request, "search.html", q=q, time_from=time_from, to=to, limit=limit,
                    events=docs, columns=SEARCH_COLUMNS, error=error,
                    histogram=draw(chart) if chart else None,
                    fields=data.suggest(who.user, ""))

    @router.get("/events/{event_id}")
    def event(request: Request, event_id: str) -> HTMLResponse:
        doc = data.event(principal(request).user, event_id)
        if doc is None:
            return page(request, "missing.html", status=404, what="event")
        inferred = set(field(doc, "containertrail.inferred") or ())
        fields = sorted(flatten(doc).items())
        return page(request, "event.html", event=doc, fields=fields, inferred=inferred,
                    raw=field(doc, "event.original") or "")

    @router.get("/timeline")
    def timeline(request: Request, kind: str = "container", value: str = "") -> HTMLResponse:
        subject: dict[str, Any] | None = None
        docs: list[dict[str, Any]] = []
        error = None
        if value:
            try:
                subject, docs = data.timeline(principal(request).user, kind, value)
            except (QueryError, UsageError) as exc:
                error = str(exc)
        return page(request, "timeline.html", kind=kind, value=value, subject=subject,
                    events=docs, columns=TIMELINE_COLUMNS, error=error,
                    graph=picture(subject) if subject else None)

    @router.get("/reports")
    def reports(request: Request) -> HTMLResponse:
        who = unscoped(Role.VIEWER)(request)
        return page(request, "reports.html", reports=operations.reports(data.settings),
                    can_run=who.may(Role.ADMIN))

    @router.get("/reports/{name}/{file_name}")
    def report_file(request: Request, name: str, file_name: str) -> Response:
        unscoped(Role.VIEWER)(request)
        path = operations.report_file(data.settings, name, file_name)
        if path is None:
            return page(request, "missing.html", status=404, what="report")
        media = {".html": "text/html", ".md": "text/markdown", ".csv": "text/csv"}.get(
            path.suffix, "application/octet-stream")
        headers = {"Content-Security-Policy": operations.REPORT_POLICY}
        if media != "text/html":
            headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
        return FileResponse(path, media_type=media, headers=headers)

    @router.get("/evidence")
    def evidence(request: Request) -> HTMLResponse:
        who = unscoped(Role.VIEWER)(request)
        return page(request, "evidence.html", configured=data.settings.evidence is not None,
                    last=operations.last_verification(data.store), can_run=who.may(Role.ADMIN))

    return router
