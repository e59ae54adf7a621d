"""The Grafana dashboard and its provisioning (deploy/grafana) load, and query real metrics."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import sendrail.metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
GRAFANA = DEPLOY / "grafana"
DASHBOARD_PATH = GRAFANA / "sendrail-dashboard.json"
GRID_COLUMNS = 24
GRAFANA_DEFAULT_PROVISIONING = "/etc/grafana/provisioning"


@dataclass(frozen=True)
class MetricSpec:
    """A metric as exported: its type and label names."""

    type: str  # counter, gauge or histogram
    labels: frozenset[str]


# Metrics the dashboard charts before shared/metrics.py exports them. Consumer lag: a gauge
# each service sets per consumer group and topic, the sum over its assigned partitions of
# the partition's end offset minus the group's committed offset. Once shared/metrics.py
# exports one of these, its definition is used instead and must match the one here (the
# entry can then go).
PROPOSED_METRICS: dict[str, MetricSpec] = {
    "sendrail_consumer_lag_messages": MetricSpec("gauge", frozenset({"group", "topic"})),
}

# Labels Prometheus adds to every scraped series (deploy/prometheus.yml).
TARGET_LABELS = frozenset({"job", "instance"})

PROMQL_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right",
                             "bool", "and", "or", "unless", "offset"})
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
RANGE = re.compile(r"\[[^\]]*\]")
SELECTOR = re.compile(r"(?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{(?P<matchers>[^}]*)\}")
MATCHER = re.compile(r"(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\((?P<labels>[^)]*)\)")
IDENTIFIER = re.compile(r"(?<![\w.])(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<call>\s*\()?")
LEGEND_LABEL = re.compile(r"\{\{\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
LABEL_VALUES = re.compile(r"^label_values\(\s*(?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*(?P<label>\w+)\s*\)$")
VARIABLE_REFERENCE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::\w+)?\}|(?P<bare>\w+))")

# What Grafana needs to load a dashboard and draw its panels: Grafana's dashboard schema
# (kinds/dashboard in the Grafana repository) for the fields, plus what provisioning adds
# (a null id, a uid of at most 40 URL-safe characters).
DATASOURCE_REF = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"type": "string", "minLength": 1}},
}
GRID_POS = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {
        "h": {"type": "integer", "minimum": 1},
        "w": {"type": "integer", "minimum": 1, "maximum": GRID_COLUMNS},
        "x": {"type": "integer", "minimum": 0, "maximum": GRID_COLUMNS - 1},
        "y": {"type": "integer", "minimum": 0},
    },
}
QUERY_PANEL = {
    "required": ["id", "type", "title", "gridPos", "datasource", "targets"],
    "properties": {
        "type": {"enum": ["timeseries", "stat", "gauge", "bargauge", "table"]},
        "datasource": DATASOURCE_REF,
        "targets": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["refId", "expr"],
                "properties": {
                    "refId": {"type": "string", "pattern": "^[A-Z]$"},
                    "expr": {"type": "string", "minLength": 1},
                    "legendFormat": {"type": "string"},
                    "datasource": DATASOURCE_REF,
                },
            },
        },
    },
}
ROW_PANEL = {
    "required": ["id", "type", "title", "gridPos", "collapsed", "panels"],
    "properties": {
        # An expanded row lists its panels at the top level; its own list stays empty.
        "collapsed": {"const": False},
        "panels": {"type": "array", "maxItems": 0},
        "gridPos": {"properties": {"h": {"const": 1}, "w": {"const": GRID_COLUMNS}, "x": {"const": 0}}},
    },
}
DASHBOARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "id": {"type": "null"},  # Grafana assigns it when it provisions the dashboard
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 39},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
        "refresh": {"type": "string"},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
                            "type": {"enum": ["query", "adhoc", "constant", "datasource", "interval",
                                              "textbox", "custom"]},
                        },
                    },
                },
            },
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "type": {"type": "string", "minLength": 1},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": GRID_POS,
                },
                "if": {"properties": {"type": {"const": "row"}}},
                "then": ROW_PANEL,
                "else": QUERY_PANEL,
            },
        },
    },
}


def exported_metrics() -> dict[str, MetricSpec]:
    """Each metric of sendrail.metrics by its family name, then the proposed ones not yet there."""
    metrics: dict[str, MetricSpec] = {}
    for metric in vars(sendrail.metrics).values():
        if isinstance(metric, MetricWrapperBase):
            family = next(iter(metric.describe()))
            # prometheus_client keeps the label names only on the metric object.
            metrics[family.name] = MetricSpec(family.type, frozenset(metric._labelnames))
    for name, spec in PROPOSED_METRICS.items():
        metrics.setdefault(name, spec)
    return metrics


def series_labels() -> dict[str, frozenset[str]]:
    """The label names of every series name a query may select (counters end in _total,
    histograms have _bucket with `le`, _sum and _count)."""
    series: dict[str, frozenset[str]] = {}
    for name, spec in exported_metrics().items():
        if spec.type == "counter":
            series[f"{name.removesuffix('_total')}_total"] = spec.labels
        elif spec.type == "histogram":
            series[f"{name}_bucket"] = spec.labels | {"le"}
            series[f"{name}_sum"] = spec.labels
            series[f"{name}_count"] = spec.labels
        else:
            series[name] = spec.labels
    return series


@dataclass(frozen=True)
class ParsedQuery:
    """What one PromQL expression names: series, label matchers per selector, grouping labels."""

    series: frozenset[str]
    matchers: tuple[tuple[str, frozenset[str]], ...]
    grouping: frozenset[str]


def parse_promql(expr: str) -> ParsedQuery:
    """Series names and label names of a PromQL expression, with Grafana variables in it.

    Label values and durations (where Grafana's variables go) are blanked first; what is
    left of the identifiers is a function when a parenthesis follows, a keyword, or a series.
    """
    text = RANGE.sub("", STRING.sub('""', expr))
    matchers = tuple(
        (selector["metric"], frozenset(m["label"] for m in MATCHER.finditer(selector["matchers"])))
        for selector in SELECTOR.finditer(text)
    )
    grouping = frozenset(label.strip() for clause in GROUPING.finditer(text)
                         for label in clause["labels"].split(",") if label.strip())
    bare = re.sub(r"\{[^}]*\}", "", GROUPING.sub("", text))
    series = frozenset(
        found["name"] for found in IDENTIFIER.finditer(bare)
        if not found["call"] and found["name"] not in PROMQL_KEYWORDS
    )
    return ParsedQuery(series, matchers, grouping)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def targets_of(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], target) for panel in query_panels(dashboard) for target in panel["targets"]]


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    variables: dict[str, dict[str, Any]] = {v["name"]: v for v in dashboard["templating"]["list"]}
    return variables[name]


def mounted_host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The host path behind a container path, through the service's bind mounts."""
    best: tuple[int, Path] | None = None
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith("."):
            continue  # a named volume
        target_path = PurePosixPath(target)
        wanted = PurePosixPath(container_path)
        if wanted == target_path or target_path in wanted.parents:
            depth = len(target_path.parts)
            if best is None or depth > best[0]:
                best = (depth, (DEPLOY / source / wanted.relative_to(target_path)).resolve())
    return best[1] if best else None


def provisioning_dir(compose: dict[str, Any]) -> Path:
    grafana = compose["services"]["grafana"]
    container_path = grafana.get("environment", {}).get("GF_PATHS_PROVISIONING",
                                                         GRAFANA_DEFAULT_PROVISIONING)
    host = mounted_host_path(grafana, container_path)
    assert host is not None, f"{container_path} is not mounted into the grafana service"
    return host


def provisioning_files(compose: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    folder = provisioning_dir(compose) / kind
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    assert files, f"no {kind} provisioning file in {folder}"
    return [yaml.safe_load(path.read_text()) for path in files]


# --- the parser the checks below rely on ------------------------------------------------


def test_parse_promql_separates_series_from_functions_keywords_labels_and_variables() -> None:
    parsed = parse_promql(
        'sum by (channel, hardness) (increase(sendrail_bounces_total{channel=~"$channel"}[1h])) '
        '/ on (channel) group_left () sum by (channel) '
        '(rate(sendrail_emails_total{outcome="sent", channel=~"a|b"}[$__rate_interval]))'
    )
    assert parsed.series == {"sendrail_bounces_total", "sendrail_emails_total"}
    assert parsed.matchers == (("sendrail_bounces_total", frozenset({"channel"})),
                               ("sendrail_emails_total", frozenset({"outcome", "channel"})))
    assert parsed.grouping == {"channel", "hardness"}
    quantile = parse_promql("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) / up")
    assert quantile.series == {"x_bucket", "up"}
    assert quantile.grouping == {"le"}


def test_series_names_follow_each_metric_type() -> None:
    series = series_labels()
    assert series["sendrail_emails_total"] == {"channel", "outcome"}
    assert series["sendrail_smtp_send_duration_seconds_bucket"] == {"channel", "le"}
    assert series["sendrail_smtp_send_duration_seconds_count"] == {"channel"}
    assert series["sendrail_queue_depth"] == {"channel"}
    assert "sendrail_smtp_send_duration_seconds" not in series
    assert "sendrail_emails_total_total" not in series


def test_a_proposed_metric_once_exported_matches_its_proposal() -> None:
    exported = exported_metrics()
    for name, proposed in PROPOSED_METRICS.items():
        assert exported[name] == proposed, f"{name} is exported with other labels or type"


# --- the dashboard ------------------------------------------------------------------------


def test_dashboard_matches_the_structure_grafana_loads(dashboard: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(DASHBOARD_SCHEMA)
    jsonschema.Draft202012Validator(DASHBOARD_SCHEMA).validate(dashboard)


def test_the_schema_rejects_what_grafana_would_not_draw(dashboard: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(DASHBOARD_SCHEMA)
    panel = query_panels(dashboard)[0]
    broken_panels = [
        {**panel, "gridPos": {**panel["gridPos"], "w": 25}},
        {**panel, "targets": [{"expr": panel["targets"][0]["expr"]}]},
        {key: value for key, value in panel.items() if key != "gridPos"},
    ]
    for broken in broken_panels:
        assert not validator.is_valid({**dashboard, "panels": [broken]})
    assert not validator.is_valid({**dashboard, "schemaVersion": 27})


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_panels_stay_inside_the_grid_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    boxes = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        boxes.append((panel["title"], grid["x"], grid["x"] + grid["w"], grid["y"], grid["y"] + grid["h"]))
    for (a, ax0, ax1, ay0, ay1), (b, bx0, bx1, by0, by1) in itertools.combinations(boxes, 2):
        overlaps = ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1
        assert not overlaps, f"{a!r} overlaps {b!r}"


def test_each_panel_has_distinct_query_ids(dashboard: dict[str, Any]) -> None:
    for panel in query_panels(dashboard):
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_query_selects_only_exported_series(dashboard: dict[str, Any]) -> None:
    series = series_labels()
    for title, target in targets_of(dashboard):
        parsed = parse_promql(target["expr"])
        assert parsed.series, f"{title}: no series in {target['expr']!r}"
        assert parsed.series <= set(series), f"{title}: unknown {sorted(parsed.series - set(series))}"


def test_every_label_a_query_names_belongs_to_its_series(dashboard: dict[str, Any]) -> None:
    series = series_labels()
    for title, target in targets_of(dashboard):
        parsed = parse_promql(target["expr"])
        for name, labels in parsed.matchers:
            assert labels <= series[name], f"{title}: {name} has no {sorted(labels - series[name])}"
        available = set().union(*(series[name] for name in parsed.series)) | TARGET_LABELS
        assert parsed.grouping <= available, f"{title}: {sorted(parsed.grouping - available)}"
        legend = {m["label"] for m in LEGEND_LABEL.finditer(target.get("legendFormat", ""))}
        assert legend <= available, f"{title}: legend names {sorted(legend - available)}"


def test_the_dashboard_charts_every_exported_metric(dashboard: dict[str, Any]) -> None:
    charted = {name for _, target in targets_of(dashboard) for name in parse_promql(target["expr"]).series}
    for name, spec in exported_metrics().items():
        main_series = {"counter": f"{name.removesuffix('_total')}_total",
                       "histogram": f"{name}_bucket"}.get(spec.type, name)
        assert main_series in charted, name


def test_channel_variable_lists_the_channels_of_the_emails_metric(dashboard: dict[str, Any]) -> None:
    channel = variable(dashboard, "channel")
    assert channel["type"] == "query"
    query = channel["query"]["query"] if isinstance(channel["query"], dict) else channel["query"]
    match = LABEL_VALUES.match(query)
    assert match is not None, query
    assert (match["metric"], match["label"]) == ("sendrail_emails_total", "channel")
    assert match["label"] in series_labels()[match["metric"]]
    # "All" must also match channel="none", the router's refusals.
    assert channel["includeAll"] and channel["allValue"] == ".*"


def test_queries_on_per_channel_series_follow_the_channel_selector(dashboard: dict[str, Any]) -> None:
    series = series_labels()
    for title, target in targets_of(dashboard):
        parsed = parse_promql(target["expr"])
        filtered = {name for name, labels in parsed.matchers if "channel" in labels}
        for name in parsed.series:
            assert "channel" not in series[name] or name in filtered, f"{title}: {name} ignores $channel"
        assert target["expr"].count('channel=~"$channel"') == len(filtered), title


def test_every_variable_used_is_defined(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    text = json.dumps(dashboard["panels"]) + json.dumps(dashboard["templating"])
    used = {m["braced"] or m["bare"] for m in VARIABLE_REFERENCE.finditer(text)}
    assert {name for name in used if not name.startswith("__")} <= defined


def test_panels_query_the_templated_data_source(dashboard: dict[str, Any]) -> None:
    """Provisioning does not fill in an import's ${DS_...} inputs, so a variable picks it."""
    source = variable(dashboard, "datasource")
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    assert "__inputs" not in dashboard
    assert "${DS_" not in json.dumps(dashboard)
    for panel in query_panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]


# --- provisioning and compose -----------------------------------------------------------


def test_datasource_provisioning_points_at_the_compose_prometheus(
    compose: dict[str, Any], dashboard: dict[str, Any],
) -> None:
    datasources = [source for config in provisioning_files(compose, "datasources")
                   for source in config["datasources"]]
    assert all(config["apiVersion"] == 1 for config in provisioning_files(compose, "datasources"))
    [prometheus] = [source for source in datasources if source["type"] == "prometheus"]
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert prometheus["url"] == f"http://prometheus:{prometheus_port}"
    assert prometheus["access"] == "proxy"
    assert prometheus["isDefault"] is True
    assert variable(dashboard, "datasource")["current"]["value"] == prometheus["uid"]
    scrape_interval = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["global"]["scrape_interval"]
    assert prometheus["jsonData"]["timeInterval"] == scrape_interval


def test_dashboard_provider_loads_exactly_the_sendrail_dashboard(compose: dict[str, Any]) -> None:
    configs = provisioning_files(compose, "dashboards")
    providers = [provider for config in configs for provider in config["providers"]]
    assert all(config["apiVersion"] == 1 for config in configs)
    [provider] = providers
    assert provider["type"] == "file"
    host = mounted_host_path(compose["services"]["grafana"], provider["options"]["path"])
    assert host is not None, f"{provider['options']['path']} is not mounted into the grafana service"
    assert sorted(host.rglob("*.json")) == [DASHBOARD_PATH.resolve()]


def test_compose_runs_grafana_on_loopback_with_its_files_mounted_read_only(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    image, _, tag = grafana["image"].partition(":")
    assert image == "grafana/grafana-oss"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), "pin a Grafana release"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert "prometheus" in grafana["depends_on"]
    bind_mounts = [volume for volume in grafana["volumes"] if volume.startswith(".")]
    assert bind_mounts and all(volume.endswith(":ro") for volume in bind_mounts)
    assert mounted_host_path(grafana, "/var/lib/grafana") is None  # Grafana's state: a named volume
    named = {volume.split(":")[0] for volume in grafana["volumes"] if not volume.startswith(".")}
    assert named <= set(compose["volumes"])
