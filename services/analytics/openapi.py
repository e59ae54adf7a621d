"""The analytics API described as OpenAPI 3.1: paths written here, response schemas from the models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from sendrail.events import ChannelKind
from sendrail.services.analytics import params
from sendrail.services.analytics.models import (
    COLLECTIONS,
    Dimension,
    ErrorResponse,
    FeedKind,
    FeedResponse,
    ItemResponse,
    SummaryResponse,
    TimelineResponse,
    Window,
)

_MODELS: tuple[type[BaseModel], ...] = (SummaryResponse, ItemResponse, TimelineResponse, FeedResponse,
                                        ErrorResponse)
_REF = "#/components/schemas/{model}"

_BOUNCE_RATE = (
    "**Bounce rate** = bounced recipients / recipients of sends sent, over the same window: "
    "`bounced / sent_recipients`, null when nothing was sent. Each recipient of a send counts once "
    "however many bounce messages came back for it; an uncorrelated bounce (not tied to a send) counts "
    "in the tenant's totals and per channel, user and identity, never per campaign or template. "
    "A send's outcome counts once (its first final event); `deferred` counts sends that waited at "
    "least once. Windows are whole UTC hours: `24h` is the current hour and the 23 before it, `7d` "
    "the current hour and the 167 before it."
)


def _ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref(model.__name__)}}}


_ERRORS = {"400": _ref("BadParameter", "responses"), "401": _ref("Unauthenticated", "responses"),
           "403": _ref("Forbidden", "responses"), "404": _ref("NotFound", "responses"),
           "421": _ref("Misdirected", "responses"), "503": _ref("CatchingUp", "responses")}

_ACCESS = (
    "Every `/api/tenants/{tenant}/...` route needs a bearer token of that tenant "
    "(`Authorization: Bearer <token>`, RFC 6750), made with `sendrail analytics token create "
    "--tenant T`: without one, or with an unknown or revoked one, the answer is 401 with "
    "`WWW-Authenticate: Bearer`; a token of another tenant gets 403, the same for every other "
    "tenant name. A service started with `--trust-proxy` asks for no token: the authenticating "
    "proxy in front names the tenant in its header, and any other tenant gets 403. Every route "
    "answers only for the Host names it is configured with (SENDRAIL_ANALYTICS_ALLOWED_HOSTS, by "
    "default the loopback names): any other Host gets 421."
)


def _tenant_get(summary: str, description: str, parameters: list[dict[str, Any]],
                ok: dict[str, Any], *, operation_id: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "description": description, "operationId": operation_id,
                    "tags": ["analytics"], "parameters": [_ref("tenant", "parameters"), *parameters],
                    "security": [{"bearer": []}], "responses": {"200": ok, **_ERRORS}}}


def _paths() -> dict[str, Any]:
    window = _ref("window", "parameters")
    filters = [_ref(name, "parameters") for name in ("campaign", "template", "user", "kind")]
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "The live page (`/?tenant=acme`)", "operationId": "page",
                      "tags": ["page"],
                      "description": "The page reads its parameters itself and keeps them in the "
                                     "address as they change. It asks for the tenant's token, keeps "
                                     "it in the tab's sessionStorage and sends it as a header, "
                                     "never in an address.",
                      "parameters": [_query("tenant", "The tenant shown.", params.IDENTIFIER_SCHEMA),
                                     _query("window", "`24h`, `7d` (the default) or `all`.",
                                            {**_ref("Window"), "default": Window.WEEK.value}),
                                     *(_ref(name, "parameters") for name in params.FEED_FILTERS)],
                      "responses": {"200": {"description": "HTML",
                                            "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/assets/app.js": {"get": {"summary": "The page's script", "operationId": "pageScript",
                                   "tags": ["page"], "responses": {"200": {
                                       "description": "JavaScript",
                                       "content": {"text/javascript": {"schema": {"type": "string"}}}}}}},
        "/assets/style.css": {"get": {"summary": "The page's style sheet", "operationId": "pageStyle",
                                      "tags": ["page"], "responses": {"200": {
                                          "description": "CSS",
                                          "content": {"text/css": {"schema": {"type": "string"}}}}}}},
        "/api/openapi.json": {"get": {"summary": "This description", "operationId": "openapi",
                                      "tags": ["meta"], "responses": {"200": {
                                          "description": "OpenAPI 3.1",
                                          "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/api/tenants/{tenant}/summary": _tenant_get(
            "A tenant's totals, optionally broken down", _BOUNCE_RATE,
            [window, _query("by", "Break the totals down by this dimension.", _ref("Dimension"))],
            _json(SummaryResponse, "Totals, and one item per key with something counted in the window."),
            operation_id="summary"),
        "/api/tenants/{tenant}/timeline": _tenant_get(
            "Sends and bounces per hour",
            "Every hour of the window, for the tenant or, with `by` and `key` together, for one key.",
            [_query("window", "`24h` (the default) or `7d`.",
                    {"type": "string", "enum": [Window.DAY.value, Window.WEEK.value],
                     "default": Window.DAY.value}),
             _query("by", "With `key`: the dimension of the key.", _ref("Dimension")),
             _query("key", "With `by`: the campaign, template, user, identity or channel.",
                    {"type": "string", "minLength": 1})],
            _json(TimelineResponse, "One point per hour, oldest first."), operation_id="timeline"),
        "/api/tenants/{tenant}/feed": _tenant_get(
            "The newest events", "Newest first; the service keeps each tenant's newest 1,000.",
            [_query("limit", "How many.", {"type": "integer", "minimum": 1, "maximum": params.FEED_LIMIT_MAX,
                                           "default": params.FEED_LIMIT_DEFAULT}), *filters],
            _json(FeedResponse, "The events, newest first."), operation_id="feed"),
        "/api/tenants/{tenant}/events": _tenant_get(
            "Events as they happen (server-sent events)",
            "A `text/event-stream` (WHATWG HTML, server-sent events): one message per new event, its "
            "`id` the event's id and its `data` a FeedItem as JSON; a comment line every 15 s keeps "
            "the connection open. Only events that arrive after the stream opens are sent: read "
            "`/feed` for the ones before. The token is checked again before each message and "
            "comment: the stream ends once its token is revoked. (A browser's EventSource cannot "
            "send the header; the page reads the stream with fetch.)",
            filters,
            {"description": "The stream; each message's data is a `#/components/schemas/FeedItem`.",
             "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            operation_id="events"),
    }
    for dimension, collection in COLLECTIONS.items():
        key_schema: dict[str, Any] = (
            {"type": "string", "enum": [c.value for c in ChannelKind]} if dimension is Dimension.CHANNEL
            else {"type": "string", "minLength": 1, "maxLength": 320} if dimension is Dimension.IDENTITY
            else params.IDENTIFIER_SCHEMA)
        key = {"name": "key", "in": "path", "required": True, "schema": key_schema,
               "description": f"The {dimension.value}."}
        paths[f"/api/tenants/{{tenant}}/{collection}/{{key}}"] = _tenant_get(
            f"One {dimension.value}'s summary", _BOUNCE_RATE, [key, window],
            _json(ItemResponse, f"The {dimension.value}'s counts over the window."),
            operation_id=f"{dimension.value}Summary")
    for operations in paths.values():  # the Host check comes before any route
        for operation in operations.values():
            operation["responses"].setdefault("421", _ref("Misdirected", "responses"))
    return paths


def _error(description: str) -> dict[str, Any]:
    return _json(ErrorResponse, description)


def document() -> dict[str, Any]:
    _, definitions = models_json_schema([(model, "serialization") for model in _MODELS], ref_template=_REF)
    kinds = ", ".join(k.value for k in FeedKind)
    one_kind = "|".join(k.value for k in FeedKind)
    return {
        "openapi": "3.1.0",
        "info": {"title": "sendrail analytics", "version": "1",
                 "description": "Delivery and bounce summaries per tenant, template, campaign, user, "
                                "identity and channel, and a live feed of events.\n\n" + _ACCESS
                                + "\n\n" + _BOUNCE_RATE},
        "paths": _paths(),
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "A tenant's analytics token (`srat_...`), from `sendrail "
                                          "analytics token create --tenant T`; it reads that tenant "
                                          "only. Not asked for behind an authenticating proxy "
                                          "(`--trust-proxy`)."},
            },
            "parameters": {
                "tenant": {"name": "tenant", "in": "path", "required": True,
                           "schema": params.IDENTIFIER_SCHEMA,
                           "description": "The tenant; a request sees only this tenant's data."},
                "window": _query("window", "How far back: `24h`, `7d` or `all` (the default).",
                                 {**_ref("Window"), "default": Window.ALL.value}),
                "campaign": _query("campaign", "Only this campaign's events.", params.IDENTIFIER_SCHEMA),
                "template": _query("template", "Only this template's events.", params.IDENTIFIER_SCHEMA),
                "user": _query("user", "Only this user's events.", params.IDENTIFIER_SCHEMA),
                "kind": _query("kind", f"Only these kinds, comma-separated: {kinds}.",
                               {"type": "string", "pattern": f"^({one_kind})(,({one_kind}))*$"}),
            },
            "responses": {
                "BadParameter": _error("A parameter is unknown, repeated or out of its range; "
                                       "`parameter` names it."),
                "NotFound": _error("No such route, or no events for that key in that tenant."),
                "CatchingUp": _error("The service is still reading the topics after a start."),
                "Unauthenticated": {
                    **_error("No bearer token, or an unknown or revoked one."),
                    "headers": {"WWW-Authenticate": {
                        "description": "`Bearer realm=\"sendrail analytics\"`, with "
                                       "`error=\"invalid_token\"` when a token was sent (RFC 6750 §3).",
                        "schema": {"type": "string"}}}},
                "Forbidden": _error("The token (or the proxy's tenant header) is for another tenant."),
                "Misdirected": _error("The Host header names a host this service does not answer for "
                                      "(a guard against DNS rebinding); every route answers so."),
            },
        },
    }
