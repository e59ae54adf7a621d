"""Who the analytics service answers: the Host check, the bearer header, the proxy's tenant header."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sendrail.analytics_tokens import Verdict, issue
from sendrail.errors import ConfigurationError
from sendrail.services.analytics.access import (
    AccessPolicy,
    AllowedHosts,
    HostVerdict,
    bearer_token,
    parse_host,
    proxy_verdict,
)
from sendrail.settings import AnalyticsSettings

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "parsed"), [
    ("localhost", ("localhost", None)),
    ("localhost:8480", ("localhost", 8480)),
    ("LocalHost:8480", ("localhost", 8480)),
    ("analytics.example.com.", ("analytics.example.com", None)),
    ("analytics.example.com.:443", ("analytics.example.com", 443)),
    ("127.0.0.1:8480", ("127.0.0.1", 8480)),
    ("[::1]", ("[::1]", None)),
    ("[::1]:8480", ("[::1]", 8480)),
    ("[::ffff:127.0.0.1]:80", ("[::ffff:127.0.0.1]", 80)),
    (" localhost:8480 ", ("localhost", 8480)),
    ("", None), (":8480", None), ("localhost:", None), ("localhost:0", None), ("localhost:65536", None),
    ("localhost:84a0", None), ("localhost:8480:1", None), ("::1", None), ("[::1", None),
    ("[::1]8480", None), ("[zz]:80", None), ("user@localhost", None), ("local host", None),
    ("-leading.example", None), ("localhost/path", None), ("exa\u0301mple.com", None),
])
def test_host_values_are_name_and_optional_port(value: str, parsed: tuple[str, int | None] | None) -> None:
    assert parse_host(value) == parsed


LOCAL = AllowedHosts.parse(None, "127.0.0.1", 8480)


@pytest.mark.parametrize(("headers", "verdict"), [
    (["127.0.0.1:8480"], HostVerdict.SERVED),
    (["localhost:8480"], HostVerdict.SERVED),
    (["LOCALHOST:8480"], HostVerdict.SERVED),
    (["localhost"], HostVerdict.SERVED),
    (["[::1]:8480"], HostVerdict.SERVED),
    (["localhost.:8480"], HostVerdict.SERVED),
    # DNS rebinding: the attacker's own name, now resolving to loopback.
    (["rebind.attacker.example:8480"], HostVerdict.MISDIRECTED),
    (["rebind.attacker.example"], HostVerdict.MISDIRECTED),
    (["localhost.attacker.example:8480"], HostVerdict.MISDIRECTED),
    (["127.0.0.2:8480"], HostVerdict.MISDIRECTED),
    (["localhost:8481"], HostVerdict.MISDIRECTED),
    ([], HostVerdict.MALFORMED),
    (["localhost:8480", "localhost:8480"], HostVerdict.MALFORMED),
    (["localhost:8480 evil"], HostVerdict.MALFORMED),
])
def test_the_default_serves_the_loopback_names_bare_and_with_the_port(
    headers: list[str], verdict: HostVerdict,
) -> None:
    assert LOCAL.judge(headers) is verdict


@pytest.mark.parametrize(("bind", "served", "not_served"), [
    ("127.0.0.1", {"127.0.0.1:8480", "localhost", "[::1]:8480"}, {"0.0.0.0:8480"}),
    ("0.0.0.0", {"localhost:8480"}, {"0.0.0.0:8480", "0.0.0.0"}),  # a wildcard names no host
    ("::", {"localhost:8480"}, {"[::]:8480"}),
    ("::1", {"[::1]:8480"}, set()),
    ("10.0.0.7", {"10.0.0.7:8480", "10.0.0.7", "localhost:8480"}, {"10.0.0.8:8480"}),
    ("Analytics.Internal", {"analytics.internal:8480"}, {"analytics.internal:9999"}),
])
def test_the_default_adds_the_bind_address(bind: str, served: set[str], not_served: set[str]) -> None:
    hosts = AllowedHosts.parse(None, bind, 8480)
    assert all(hosts.judge([h]) is HostVerdict.SERVED for h in served)
    assert all(hosts.judge([h]) is HostVerdict.MISDIRECTED for h in not_served)


def test_configured_hosts_replace_the_default_and_match_exactly() -> None:
    hosts = AllowedHosts.parse("Analytics.Example.com, analytics.example.com:8480,,", "127.0.0.1", 8480)
    assert hosts.judge(["analytics.example.com"]) is HostVerdict.SERVED
    assert hosts.judge(["ANALYTICS.example.com:8480"]) is HostVerdict.SERVED
    assert hosts.judge(["analytics.example.com:8443"]) is HostVerdict.MISDIRECTED
    assert hosts.judge(["localhost:8480"]) is HostVerdict.MISDIRECTED
    assert hosts.describe() == "analytics.example.com,analytics.example.com:8480"


def test_a_star_turns_the_host_check_off_but_a_host_is_still_needed() -> None:
    hosts = AllowedHosts.parse("*", "127.0.0.1", 8480)
    assert hosts.judge(["anything.example:1"]) is HostVerdict.SERVED
    assert hosts.judge([]) is HostVerdict.MALFORMED
    assert hosts.describe() == "*"


@pytest.mark.parametrize("configured", ["localhost:http", "a b", "::1", "https://analytics.example.com"])
def test_a_configured_host_that_is_no_host_stops_the_start(configured: str) -> None:
    with pytest.raises(ConfigurationError, match="ALLOWED_HOSTS"):
        AllowedHosts.parse(configured, "127.0.0.1", 8480)


TOKEN = "srat_0101010101010101_" + "A" * 43


@pytest.mark.parametrize(("headers", "token"), [
    ([f"Bearer {TOKEN}"], TOKEN),
    ([f"bearer {TOKEN}"], TOKEN),
    ([f"BEARER   {TOKEN}  "], TOKEN),
    ([f"Basic {TOKEN}"], None),
    (["Bearer"], None),
    (["Bearer "], None),
    ([TOKEN], None),
    ([], None),
    ([f"Bearer {TOKEN}", f"Bearer {TOKEN}"], None),
])
def test_the_bearer_token_comes_from_one_authorization_header(headers: list[str], token: str | None) -> None:
    assert bearer_token(headers) == token


@pytest.mark.parametrize(("headers", "verdict"), [
    (["acme"], Verdict.ALLOWED),
    ([" acme "], Verdict.ALLOWED),
    (["globex"], Verdict.FORBIDDEN),
    (["ACME"], Verdict.FORBIDDEN),
    ([], Verdict.UNAUTHENTICATED),
    ([""], Verdict.UNAUTHENTICATED),
    (["acme", "acme"], Verdict.UNAUTHENTICATED),  # appended rather than replaced: refused
    (["globex", "acme"], Verdict.UNAUTHENTICATED),
])
def test_behind_the_proxy_its_header_names_the_one_tenant(headers: list[str], verdict: Verdict) -> None:
    assert proxy_verdict(headers, "acme") is verdict


def test_the_policy_uses_tokens_unless_a_proxy_header_is_set() -> None:
    issued = issue("acme", T0)
    tokens = {("acme", issued.record.token_id): issued.record}
    bearer = [f"Bearer {issued.token}"]
    by_token = AccessPolicy.from_settings(AnalyticsSettings())
    assert by_token.proxy_header is None
    assert by_token.verdict("acme", authorization=bearer, proxy_tenant=["acme"], tokens=tokens) is Verdict.ALLOWED
    assert by_token.verdict("acme", authorization=[], proxy_tenant=["acme"],
                            tokens=tokens) is Verdict.UNAUTHENTICATED  # a header proves nothing here
    proxied = AccessPolicy.from_settings(AnalyticsSettings(trust_proxy_header="X-Sendrail-Tenant"))
    assert proxied.verdict("acme", authorization=[], proxy_tenant=["acme"], tokens={}) is Verdict.ALLOWED
    assert proxied.verdict("acme", authorization=bearer, proxy_tenant=[],
                           tokens=tokens) is Verdict.UNAUTHENTICATED  # the proxy decides, not tokens


@pytest.mark.parametrize("header", ["X Tenant", "X-Tenant:", "", "Tenant\r\nX-Other"])
def test_a_proxy_header_that_is_no_header_name_stops_the_start(header: str) -> None:
    with pytest.raises(ConfigurationError, match="header"):
        AccessPolicy.from_settings(AnalyticsSettings(trust_proxy_header=header))
