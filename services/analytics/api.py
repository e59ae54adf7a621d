"""The analytics HTTP API and page: summaries, the feed, live events and the OpenAPI description.

Every data route names its tenant in the path and reads only that tenant's data, for a bearer
token of that tenant (or, behind an authenticating proxy, for the tenant its header names). A
request whose Host is not one this service answers for is refused before anything else. Errors
are JSON (`ErrorResponse`) with a stable code; unknown or repeated parameters are refused
rather than ignored, so a typo never passes for a filter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import hdrs, web
from pydantic import BaseModel

from sendrail.analytics_tokens import TokenRecords, Verdict
from sendrail.clock import Clock
from sendrail.services.analytics import params
from sendrail.services.analytics.access import AccessPolicy, HostVerdict, bearer_token
from sendrail.services.analytics.aggregation import Analytics
from sendrail.services.analytics.live import LiveFeed
from sendrail.services.analytics.models import COLLECTIONS, Dimension, ErrorResponse, Window
from sendrail.services.analytics.openapi import document

WEB_DIR = Path(__file__).with_name("web")
PAGE_FILES = {"/": ("index.html", "text/html"), "/assets/app.js": ("app.js", "text/javascript"),
              "/assets/style.css": ("style.css", "text/css")}
HEARTBEAT_S = 15.0
"""A comment line this often keeps proxies from closing an idle event stream."""
SSE_RETRY_MS = 2000
"""How soon a browser reconnects a dropped stream (the `retry` field, WHATWG HTML §9.2)."""
REALM = "sendrail analytics"
PAGE_AUTH = b'<html lang="en" data-auth="token">'
"""How the page learns whether to ask for a token; behind the proxy it is served `proxy`."""
TENANT_PATHS = "/api/tenants/"

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page loads nothing from elsewhere and runs no inline script: bounce diagnostics and
    # addresses come from strangers' mail servers.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

QUERY_PARAMETERS: dict[str, tuple[str, ...]] = {
    "/api/tenants/{tenant}/summary": ("window", "by"),
    **{f"/api/tenants/{{tenant}}/{collection}/{{key}}": ("window",) for collection in COLLECTIONS.values()},
    "/api/tenants/{tenant}/timeline": ("window", "by", "key"),
    "/api/tenants/{tenant}/feed": ("limit", *params.FEED_FILTERS),
    "/api/tenants/{tenant}/events": params.FEED_FILTERS,
}
"""What each data route accepts in its query string; anything else is refused."""


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json")


def _error(status: int, code: str, message: str, parameter: str | None = None) -> web.Response:
    return _json(ErrorResponse(error=code, message=message, parameter=parameter), status)


def _challenge(error: str | None = None) -> str:
    """RFC 6750 §3: the scheme and realm, and why a token presented was refused."""
    return f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")


class AnalyticsApi:
    def __init__(self, analytics: Analytics, live: LiveFeed, clock: Clock,
                 ready: Callable[[], bool], *, access: AccessPolicy,
                 tokens: Callable[[], TokenRecords]) -> None:
        """`tokens`: the registry's token records as they are now (read at each request)."""
        self._analytics = analytics
        self._live = live
        self._clock = clock
        self._ready = ready
        self._access = access
        self._tokens = tokens
        self._openapi = json.dumps(document(), indent=1)
        self._pages = {path: ((WEB_DIR / name).read_bytes(), content_type)
                       for path, (name, content_type) in PAGE_FILES.items()}
        if access.proxy_header is not None:
            index, content_type = self._pages["/"]
            if index.count(PAGE_AUTH) != 1:
                raise RuntimeError(f"index.html must open with {PAGE_AUTH.decode()}")
            proxied = index.replace(PAGE_AUTH, PAGE_AUTH.replace(b'"token"', b'"proxy"'))
            self._pages["/"] = (proxied, content_type)

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(_add_security_headers)
        route = app.router.add_get
        for path in PAGE_FILES:
            route(path, self._page, allow_head=False)
        route("/api/openapi.json", self._openapi_json, allow_head=False)
        route("/api/tenants/{tenant}/summary", self._summary, allow_head=False)
        for dimension, collection in COLLECTIONS.items():
            route(f"/api/tenants/{{tenant}}/{collection}/{{key}}", self._item_handler(dimension),
                  allow_head=False)
        route("/api/tenants/{tenant}/timeline", self._timeline, allow_head=False)
        route("/api/tenants/{tenant}/feed", self._feed, allow_head=False)
        route("/api/tenants/{tenant}/events", self._events, allow_head=False)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Check the Host, then (for tenant data) readiness and access; turn refusals into JSON."""
        try:
            host = self._access.hosts.judge(request.headers.getall(hdrs.HOST, []))
            if host is HostVerdict.MALFORMED:
                return _error(400, "bad_host", "the request needs one Host header, host or host:port")
            if host is HostVerdict.MISDIRECTED:
                return _error(421, "misdirected", "this service does not answer for that host name; "
                                                  "see SENDRAIL_ANALYTICS_ALLOWED_HOSTS")
            if request.path.startswith(TENANT_PATHS):
                if not self._ready():
                    return _error(503, "catching_up", "the analytics service is still reading the topics "
                                                      "(and tokens); try again in a moment")
                refusal = self._refusal(request, _path_tenant(request))
                if refusal is not None:
                    return refusal
            return await handler(request)
        except params.BadParameter as error:
            return _error(400, "bad_parameter", error.message, error.parameter)
        except web.HTTPNotFound:
            return _error(404, "not_found", f"no route {request.method} {request.path}; "
                                            "see /api/openapi.json")
        except web.HTTPMethodNotAllowed as error:
            response = _error(405, "method_not_allowed", f"{request.method} is not allowed here; "
                                                         f"use {', '.join(sorted(error.allowed_methods))}")
            response.headers["Allow"] = ",".join(sorted(error.allowed_methods))
            return response

    def _verdict(self, request: web.Request, tenant: str) -> Verdict:
        proxy_header = self._access.proxy_header
        return self._access.verdict(
            tenant, authorization=request.headers.getall(hdrs.AUTHORIZATION, []),
            proxy_tenant=request.headers.getall(proxy_header, []) if proxy_header else [],
            tokens=self._tokens())

    def _refusal(self, request: web.Request, tenant: str) -> web.Response | None:
        """401 without a valid token; 403 for another tenant's. A 403 says nothing of the other
        tenant: every tenant but the token's own gets the same answer, existing or not."""
        verdict = self._verdict(request, tenant)
        if verdict is Verdict.ALLOWED:
            return None
        if self._access.proxy_header is not None:
            # The proxy authenticates and challenges; here nothing more can be asked for.
            seen = "another tenant" if verdict is Verdict.FORBIDDEN else "no tenant (or more than one)"
            return _error(403, "forbidden", f"the authenticating proxy named {seen} in "
                                            f"{self._access.proxy_header}")
        if verdict is Verdict.FORBIDDEN:
            response = _error(403, "forbidden", "this token reads another tenant's analytics")
            response.headers[hdrs.WWW_AUTHENTICATE] = _challenge("insufficient_scope")
            return response
        presented = bearer_token(request.headers.getall(hdrs.AUTHORIZATION, [])) is not None
        response = _error(401, "unauthenticated",
                          "this token is unknown or revoked" if presented else
                          "send a token of this tenant: Authorization: Bearer <token> "
                          "(sendrail analytics token create)")
        response.headers[hdrs.WWW_AUTHENTICATE] = _challenge("invalid_token" if presented else None)
        return response

    async def _page(self, request: web.Request) -> web.Response:
        body, content_type = self._pages[request.path]
        return web.Response(body=body, content_type=content_type, charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _openapi_json(self, _: web.Request) -> web.Response:
        return web.Response(text=self._openapi, content_type="application/json")

    async def _summary(self, request: web.Request) -> web.Response:
        query = self._query(request)
        tenant = _tenant(request)
        window = params.window(query.get("window"), default=Window.ALL)
        by = params.dimension(query["by"]) if "by" in query else None
        return _json(self._analytics.summary(tenant, window, self._clock(), by))

    def _item_handler(self, dimension: Dimension) -> Handler:
        async def item(request: web.Request) -> web.Response:
            query = self._query(request)
            tenant = _tenant(request)
            key = params.dimension_key(dimension, request.match_info["key"])
            window = params.window(query.get("window"), default=Window.ALL)
            found = self._analytics.item(tenant, dimension, key, window, self._clock())
            if found is None:
                return _error(404, "not_found", f"tenant {tenant!r} has no events for "
                                                f"{dimension.value} {key!r}")
            return _json(found)
        return item

    async def _timeline(self, request: web.Request) -> web.Response:
        query = self._query(request)
        tenant = _tenant(request)
        window = params.window(query.get("window"), default=Window.DAY, allowed=(Window.DAY, Window.WEEK))
        scope: tuple[Dimension, str] | None = None
        if "by" in query or "key" in query:
            if "by" not in query or "key" not in query:
                missing = "key" if "by" in query else "by"
                raise params.BadParameter(missing, "by and key go together: give both or neither")
            by = params.dimension(query["by"])
            scope = (by, params.dimension_key(by, query["key"]))
        found = self._analytics.timeline(tenant, window, self._clock(), scope)
        if found is None:
            assert scope is not None
            return _error(404, "not_found", f"tenant {tenant!r} has no events for "
                                            f"{scope[0].value} {scope[1]!r}")
        return _json(found)

    async def _feed(self, request: web.Request) -> web.Response:
        query = self._query(request)
        tenant = _tenant(request)
        limit = params.limit(query.get("limit"))
        return _json(self._analytics.feed(tenant, params.feed_filter(query), limit))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events (WHATWG HTML §9.2): each new feed entry as one message. Access is
        checked again before each message and heartbeat: a revoked token ends its streams."""
        query = self._query(request)
        tenant = _tenant(request)
        feed_filter = params.feed_filter(query)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        with self._live.subscribe(tenant, feed_filter) as subscription:
            try:
                await response.prepare(request)
                await response.write(f"retry: {SSE_RETRY_MS}\n: live\n\n".encode())
                while True:
                    try:
                        item = await asyncio.wait_for(subscription.next(), HEARTBEAT_S)
                    except TimeoutError:
                        if self._verdict(request, tenant) is not Verdict.ALLOWED:
                            break
                        await response.write(b": keep-alive\n\n")
                        continue
                    if item is None or self._verdict(request, tenant) is not Verdict.ALLOWED:
                        break  # stopping, this reader fell too far behind, or its token was revoked
                    # The JSON is one line: pydantic escapes line breaks inside strings.
                    await response.write(f"id: {item.id}\ndata: {item.model_dump_json()}\n\n".encode())
            except ConnectionResetError:
                pass  # the reader went away
        return response

    @staticmethod
    def _query(request: web.Request) -> dict[str, str]:
        resource = request.match_info.route.resource
        accepted = QUERY_PARAMETERS[resource.canonical] if resource is not None else ()
        params.check_names([name for name, _ in request.query.items()], accepted)
        return dict(request.query)


def _tenant(request: web.Request) -> str:
    return params.identifier("tenant", request.match_info["tenant"])


def _path_tenant(request: web.Request) -> str:
    """The tenant a path under /api/tenants/ names, checked; also for a path no route matches,
    so that an unknown route gets the same refusal as a known one."""
    tenant = request.match_info.get("tenant")
    if tenant is None:
        tenant = request.path.removeprefix(TENANT_PATHS).partition("/")[0]
    return params.identifier("tenant", tenant)


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_SECURITY_HEADERS)
    if request.path.startswith(TENANT_PATHS):
        # A tenant's data is never kept by a browser or proxy cache.
        response.headers.setdefault(hdrs.CACHE_CONTROL, "no-store")
