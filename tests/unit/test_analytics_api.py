"""The analytics API's description matches its routes, and its parameters are checked as documented."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sendrail.services.analytics import params
from sendrail.services.analytics.access import AccessPolicy, AllowedHosts
from sendrail.services.analytics.aggregation import Analytics
from sendrail.services.analytics.api import PAGE_FILES, QUERY_PARAMETERS, WEB_DIR, AnalyticsApi
from sendrail.services.analytics.feed import FeedFilter
from sendrail.services.analytics.live import LiveFeed
from sendrail.services.analytics.models import Dimension, FeedKind, Window
from sendrail.services.analytics.openapi import document


def app_routes() -> set[tuple[str, str]]:
    access = AccessPolicy(AllowedHosts.parse(None, "127.0.0.1", 8480))
    app = AnalyticsApi(Analytics(), LiveFeed(), lambda: datetime.now(UTC), ready=lambda: True,
                       access=access, tokens=dict).application()
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.resource is not None}


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    found: Any = doc
    for part in node["$ref"].removeprefix("#/").split("/"):
        found = found[part]
    return found  # type: ignore[no-any-return]


def test_every_route_of_the_app_is_described_and_every_description_is_a_route() -> None:
    doc = document()
    described = {(method.upper(), path) for path, operations in doc["paths"].items() for method in operations}
    assert described == app_routes()
    assert doc["openapi"].startswith("3.1")


def test_each_data_route_documents_exactly_the_query_parameters_it_accepts() -> None:
    doc = document()
    assert set(QUERY_PARAMETERS) <= set(doc["paths"])
    for path, accepted in QUERY_PARAMETERS.items():
        parameters = [resolve(doc, p) for p in doc["paths"][path]["get"]["parameters"]]
        assert {p["name"] for p in parameters if p["in"] == "query"} == set(accepted), path
        path_names = {p["name"] for p in parameters if p["in"] == "path"}
        assert path_names == {part.strip("{}") for part in path.split("/") if part.startswith("{")}, path


def test_every_tenant_route_asks_for_a_bearer_token_and_documents_its_refusals() -> None:
    doc = document()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    for path, operations in doc["paths"].items():
        operation = operations["get"]
        assert "421" in operation["responses"], path  # the Host check comes before every route
        if path.startswith("/api/tenants/"):
            assert operation["security"] == [{"bearer": []}], path
            assert {"401", "403"} <= set(operation["responses"]), path
        else:
            assert "security" not in operation, path
    challenge = resolve(doc, {"$ref": "#/components/responses/Unauthenticated"})
    assert "WWW-Authenticate" in challenge["headers"]


def test_every_reference_in_the_description_resolves() -> None:
    doc = document()
    references: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                references.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert len(references) > 20
    for reference in set(references):
        assert resolve(doc, {"$ref": reference}), reference
    json.dumps(doc)  # plain JSON throughout


def test_the_page_files_exist_and_load_nothing_from_elsewhere() -> None:
    for name, _ in PAGE_FILES.values():
        text = (WEB_DIR / name).read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    assert "innerHTML" not in (WEB_DIR / "app.js").read_text()


@pytest.mark.parametrize(("value", "expected"), [(None, Window.ALL), ("24h", Window.DAY), ("7d", Window.WEEK),
                                                 ("all", Window.ALL)])
def test_window_values(value: str | None, expected: Window) -> None:
    assert params.window(value, default=Window.ALL) is expected


@pytest.mark.parametrize("value", ["", "1d", "24H", "week", "all "])
def test_a_bad_window_is_refused_by_name(value: str) -> None:
    with pytest.raises(params.BadParameter) as refused:
        params.window(value, default=Window.ALL)
    assert refused.value.parameter == "window" and "24h, 7d, all" in refused.value.message


def test_a_timeline_window_is_24h_or_7d() -> None:
    with pytest.raises(params.BadParameter, match="24h, 7d"):
        params.window("all", default=Window.DAY, allowed=(Window.DAY, Window.WEEK))


@pytest.mark.parametrize(("value", "ok"), [("1", True), ("50", True), (str(params.FEED_LIMIT_MAX), True),
                                           ("0", False), ("-1", False), (str(params.FEED_LIMIT_MAX + 1), False),
                                           ("ten", False), ("", False), ("1.5", False)])
def test_limit_range(value: str, ok: bool) -> None:
    if ok:
        assert params.limit(value) == int(value)
    else:
        with pytest.raises(params.BadParameter) as refused:
            params.limit(value)
        assert refused.value.parameter == "limit"


@pytest.mark.parametrize(("value", "ok"), [("acme", True), ("t-1a2b", True), ("a.b:c@d_e-f", True), ("A" * 128, True),
                                           ("", False), ("-acme", False), ("ac me", False), ("a/b", False),
                                           ("A" * 129, False), ("<script>", False)])
def test_identifiers_follow_the_send_request_pattern(value: str, ok: bool) -> None:
    if ok:
        assert params.identifier("tenant", value) == value
    else:
        with pytest.raises(params.BadParameter) as refused:
            params.identifier("tenant", value)
        assert refused.value.parameter == "tenant"


@pytest.mark.parametrize(("by", "key", "ok"), [
    (Dimension.CHANNEL, "gmail", True), (Dimension.CHANNEL, "pigeon", False),
    (Dimension.IDENTITY, "first.last+sales@acme.example.com", True), (Dimension.IDENTITY, "a b@x.org", False),
    (Dimension.IDENTITY, "x" * 321, False), (Dimension.CAMPAIGN, "spring", True),
    (Dimension.TEMPLATE, "bad template", False),
])
def test_dimension_keys(by: Dimension, key: str, ok: bool) -> None:
    if ok:
        assert params.dimension_key(by, key) == key
    else:
        with pytest.raises(params.BadParameter):
            params.dimension_key(by, key)


def test_an_unknown_dimension_is_refused_with_the_choices() -> None:
    assert params.dimension("campaign") is Dimension.CAMPAIGN
    with pytest.raises(params.BadParameter, match="campaign, template, user, identity, channel") as refused:
        params.dimension("country")
    assert refused.value.parameter == "by"


def test_unknown_and_repeated_parameters_are_refused() -> None:
    params.check_names(["window", "by"], ("window", "by"))
    with pytest.raises(params.BadParameter, match="this route takes: by, window") as refused:
        params.check_names(["windw"], ("window", "by"))
    assert refused.value.parameter == "windw"
    with pytest.raises(params.BadParameter, match="more than once"):
        params.check_names(["window", "window"], ("window",))


def test_feed_filters() -> None:
    assert params.feed_filter({}) == FeedFilter()
    assert params.feed_filter({"campaign": "spring", "kind": "bounce,complaint"}) == FeedFilter(
        campaign="spring", kinds=frozenset({FeedKind.BOUNCE, FeedKind.COMPLAINT}))
    with pytest.raises(params.BadParameter, match="'bounces'") as refused:
        params.feed_filter({"kind": "bounce,bounces"})
    assert refused.value.parameter == "kind"
    with pytest.raises(params.BadParameter) as refused:
        params.feed_filter({"user": "al ice"})
    assert refused.value.parameter == "user"
