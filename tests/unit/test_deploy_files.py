"""The deployment files (deploy/) agree with the code: services, settings, ports, entrypoint."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from pydantic_settings import BaseSettings

from sendrail.cli.local import SERVICES
from sendrail.settings import AnalyticsSettings, HttpSettings, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ENV_LINE = re.compile(r"^(?P<comment>#\s*)?(?P<name>SENDRAIL_[A-Z0-9_]+)=(?P<value>.*)$")


def settings_classes() -> dict[str, type[BaseSettings]]:
    """Each SENDRAIL_* variable the code reads, with the settings class that reads it."""
    by_name: dict[str, type[BaseSettings]] = {}
    for cls in typing.get_type_hints(Settings).values():
        prefix = cls.model_config["env_prefix"]
        for field in cls.model_fields:
            by_name[f"{prefix}{field}".upper()] = cls
    return by_name


SETTING_NAMES = set(settings_classes())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def env_example() -> list[tuple[str, str, bool]]:
    """(name, value, commented out) for every setting line of .env.example."""
    lines = []
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        match = ENV_LINE.match(line)
        if match:
            lines.append((match["name"], match["value"], match["comment"] is not None))
        else:
            assert line == "" or line.startswith("#"), f"not NAME=value nor a comment: {line!r}"
    return lines


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, arguments = stripped.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def image_environment() -> dict[str, str]:
    """The SENDRAIL_* values the image's ENV sets (the runtime stage is the last one)."""
    environment: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            environment = {}
        elif keyword == "ENV":
            for pair in arguments.split():
                name, _, value = pair.partition("=")
                if name.startswith("SENDRAIL_"):
                    environment[name] = value
    return environment


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return {name: str(value) for name, value in environment.items()}


def kafka_nodes(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose["services"].items()
            if str(service.get("image", "")).startswith("apache/kafka:")}


def test_compose_runs_three_kafka_brokers_in_one_kraft_quorum(compose: dict[str, Any]) -> None:
    nodes = kafka_nodes(compose)
    assert len(nodes) == 3
    node_ids = set()
    for name, node in nodes.items():
        environment = environment_of(node)
        assert node["image"] == "apache/kafka:4.1.1"
        assert "broker" in environment["KAFKA_PROCESS_ROLES"].split(",")
        assert environment["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert environment["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert environment["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        voters = {voter.partition("@")[2].partition(":")[0]
                  for voter in environment["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")}
        assert voters == set(nodes)
        node_ids.add(environment["KAFKA_NODE_ID"])
    assert len(node_ids) == 3
    assert len({environment_of(node)["CLUSTER_ID"] for node in nodes.values()}) == 1


def test_compose_runs_every_service_with_its_command_after_the_topics_job(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(SERVICES) <= set(services)
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["service", name]
        assert service["env_file"] == ".env"
        assert "/healthz" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_topics_job_creates_replicated_topics_once_every_broker_is_healthy(
    compose: dict[str, Any],
) -> None:
    topics = compose["services"]["topics"]
    assert topics["command"] == ["topics"]
    assert topics["restart"] == "no"
    assert environment_of(topics)["SENDRAIL_KAFKA_REPLICATION_FACTOR"] == "3"
    assert topics["depends_on"] == {
        name: {"condition": "service_healthy"} for name in kafka_nodes(compose)
    }


def test_every_variable_compose_and_env_example_set_is_a_real_setting(
    compose: dict[str, Any], env_example: list[tuple[str, str, bool]],
) -> None:
    in_compose = {name for service in compose["services"].values()
                  for name in environment_of(service) if name.startswith("SENDRAIL_")}
    in_env_example = {name for name, _, _ in env_example}
    assert in_compose - SETTING_NAMES == set()
    assert in_env_example - SETTING_NAMES == set()
    assert set(image_environment()) - SETTING_NAMES == set()


def test_env_example_documents_every_setting(env_example: list[tuple[str, str, bool]]) -> None:
    assert SETTING_NAMES - {name for name, _, _ in env_example} == set()


def test_env_example_points_at_the_compose_brokers_and_holds_no_real_key(
    compose: dict[str, Any], env_example: list[tuple[str, str, bool]],
) -> None:
    active = {name: value for name, value, commented in env_example if not commented}
    advertised = {environment_of(node)["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://")
                  for node in kafka_nodes(compose).values()}
    assert set(active["SENDRAIL_KAFKA_BOOTSTRAP_SERVERS"].split(",")) == advertised
    assert active["SENDRAIL_KAFKA_REPLICATION_FACTOR"] == "3"
    with pytest.raises(ValueError):
        Fernet(active["SENDRAIL_SECRET_KEY"].encode())


def test_env_example_values_parse_and_commented_ones_are_the_container_defaults(
    env_example: list[tuple[str, str, bool]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    classes = settings_classes()
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in image_environment().items():
        monkeypatch.setenv(name, value)
    for name, value, commented in env_example:
        cls = classes[name]
        field = name.removeprefix(cls.model_config["env_prefix"].upper()).lower()
        container_default = getattr(cls(), field)
        with monkeypatch.context() as env:
            env.setenv(name, value)
            documented = getattr(cls(), field)  # raises if the value does not validate
        if commented and container_default is not None:
            assert documented == container_default, name


def test_prometheus_scrapes_every_service_on_the_http_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    port = HttpSettings.model_fields["port"].default
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in SERVICES:
        assert jobs[name]["dns_sd_configs"] == [{"names": [name], "type": "A", "port": port}]


def test_dockerfile_runs_the_sendrail_command_as_a_non_root_user_without_the_dev_extra() -> None:
    instructions = dockerfile_instructions()
    last = {keyword: arguments for keyword, arguments in instructions}
    assert json.loads(last["ENTRYPOINT"]) == ["sendrail"]
    assert json.loads(last["CMD"]) == ["--help"]
    assert last["USER"] not in {"root", "0"}
    assert last["EXPOSE"].split() == [str(HttpSettings.model_fields["port"].default),
                                      str(AnalyticsSettings.model_fields["port"].default)]
    assert image_environment()["SENDRAIL_HTTP_HOST"] == "0.0.0.0"
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in instructions
    assert all(arguments.startswith("${PYTHON_IMAGE}")
               for keyword, arguments in instructions if keyword == "FROM")
    installs = [arguments for keyword, arguments in instructions
                if keyword == "RUN" and "pip install" in arguments]
    assert installs and not any("[dev]" in install for install in installs)


def test_dockerfile_copies_every_folder_setup_py_maps() -> None:
    tree = ast.parse((REPO / "setup.py").read_text())
    roots = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                 if isinstance(node, ast.Assign)
                 and any(getattr(target, "id", None) == "PACKAGE_ROOTS" for target in node.targets))
    copied = {source.rstrip("/") for keyword, arguments in dockerfile_instructions()
              if keyword == "COPY" and not arguments.startswith("--from")
              for source in arguments.split()[:-1]}
    assert {folder.split("/")[0] for folder in roots.values()} <= copied


DEV_EXTRA_BLOCKER = """
import importlib, importlib.abc, sys
BLOCKED = set(sys.argv[1:])
class DevExtra(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED or name.startswith("sendrail.sandbox"):
            raise ImportError(f"{name} is not in the production image")
        return None
sys.meta_path.insert(0, DevExtra())
import sendrail.cli.main
from sendrail.cli.local import SERVICES
for module in SERVICES.values():
    importlib.import_module(module)
"""


def test_the_service_command_imports_nothing_from_the_dev_extra(tmp_path: Path) -> None:
    """The image installs sendrail without `dev`: the sandbox and aiosmtpd are not there."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dev_modules = [re.split(r"[=<>!~\[ ]", requirement)[0].replace("-", "_")
                   for requirement in project["optional-dependencies"]["dev"]]
    assert "aiosmtpd" in dev_modules
    result = subprocess.run([sys.executable, "-c", DEV_EXTRA_BLOCKER, *dev_modules],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
