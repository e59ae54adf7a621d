"""The local stack behind `make run` and `make demo`: Kafka, the mail sandbox, the six services.

Services run as separate processes, as in production; they reach the sandbox through
the same settings a real deployment uses (token URLs, a CA file), written to
`.cache/local.env` so that `sendrail` commands in another terminal reach them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiohttp

from sendrail.analytics_tokens import IssuedToken
from sendrail.bus.clients import ensure_topics, make_producer, wait_for_broker
from sendrail.cli.local import SERVICES
from sendrail.clock import system_clock
from sendrail.sandbox.admin_client import SandboxAdminClient
from sendrail.sandbox.analytics_access import SAMPLE_TENANT, issue_token, revoke_token
from sendrail.sandbox.kafka_broker import KafkaBroker
from sendrail.sandbox.mail_sandbox import MailSandbox, SandboxInfo
from sendrail.sandbox.ports import free_port
from sendrail.sandbox.processes import stop_process
from sendrail.sandbox.sample_users import SAMPLE_USERS, connect_sample_users
from sendrail.secrets import SecretBox
from sendrail.settings import LOCAL_ENV_FILE, KafkaSettings, SecretSettings

RUN_DIR = Path(".cache/run")
LOCAL_KAFKA_PORT = 19092
LOCAL_ANALYTICS_PORT = 8480
SANDBOX_INFO_VARIABLE = "SENDRAIL_SANDBOX_INFO"


@dataclass
class ServiceProcess:
    name: str
    http_port: int
    log_file: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self, env: dict[str, str]) -> None:
        log = self.log_file.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sendrail.cli", "service", self.name,
            env={**os.environ, **env, "SENDRAIL_HTTP_PORT": str(self.http_port)},
            stdout=log, stderr=log, start_new_session=True,
        )
        log.close()

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        async with asyncio.timeout(timeout_s):
            while True:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited ({self.process.returncode}); "
                                       f"the end of {self.log_file}:\n{self._log_tail()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)

    def _log_tail(self, lines: int = 20) -> str:
        """The log's last lines: a run directory may be gone by the time anyone looks."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    async def stop(self, timeout_s: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is not None:
            await stop_process(process, timeout_s=timeout_s)


class LocalStack:
    """Everything sendrail needs on this machine, started in order and stopped in reverse."""

    def __init__(self, run_dir: Path, *, kafka_port: int, analytics_port: int | None = None) -> None:
        self.run_dir = run_dir
        self.analytics_port = analytics_port or free_port()
        self.broker = KafkaBroker(run_dir / "kafka", port=kafka_port)
        self._mail_dir = Path(tempfile.mkdtemp(prefix="sendrail-sandbox-"))
        self.sandbox = MailSandbox(self._mail_dir)
        self.services = [
            ServiceProcess(name, free_port(), run_dir / "logs" / f"{name}.log") for name in SERVICES
        ]
        self.env: dict[str, str] = {}
        self.analytics_token: IssuedToken | None = None
        """The sample tenant's, for the page; revoked when the stack stops."""
        self._stack = contextlib.AsyncExitStack()

    @property
    def info(self) -> SandboxInfo:
        return self.sandbox.info

    async def __aenter__(self) -> LocalStack:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        key_file = self.run_dir / "secret.key"
        if not key_file.exists():
            key_file.write_bytes(SecretBox.generate_key())
            key_file.chmod(0o600)
        try:
            await self.broker.start()
            self._stack.push_async_callback(self.broker.stop)
            kafka = KafkaSettings(bootstrap_servers=self.broker.bootstrap_servers)
            await wait_for_broker(kafka, timeout_s=30)
            await ensure_topics(kafka)
            self.analytics_token = await issue_token(kafka)  # before the services: read at their start
            self._stack.push_async_callback(revoke_token, kafka, self.analytics_token)
            await self._stack.enter_async_context(self.sandbox)
            info = self.sandbox.info
            self.env = {
                "SENDRAIL_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
                "SENDRAIL_SECRET_KEY_FILE": str(key_file.resolve()),
                "SENDRAIL_TLS_CA_FILE": str(info.ca_file),
                "SENDRAIL_OAUTH_GOOGLE_TOKEN_URL": info.token_url_google,
                "SENDRAIL_OAUTH_MICROSOFT_TOKEN_URL": info.token_url_microsoft,
                "SENDRAIL_SENDER_HELD_RECHECK_S": "2",
                "SENDRAIL_ANALYTICS_PORT": str(self.analytics_port),
                SANDBOX_INFO_VARIABLE: str(info.root_dir / "sandbox.json"),
            }
            LOCAL_ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
            LOCAL_ENV_FILE.write_text("".join(f"{k}={v}\n" for k, v in self.env.items()))
            self._stack.callback(LOCAL_ENV_FILE.unlink, missing_ok=True)
            for service in self.services:
                await service.start(self.env)
                self._stack.push_async_callback(service.stop)
            async with aiohttp.ClientSession() as session:
                await asyncio.gather(*(s.wait_ready(session, 60) for s in self.services))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stack.aclose()

    async def connect_sample_users(self) -> None:
        producer = make_producer(KafkaSettings(bootstrap_servers=self.broker.bootstrap_servers),
                                 client_id="sendrail-local")
        await producer.start()
        try:
            async with SandboxAdminClient(self.info) as admin:
                box = SecretBox.from_settings(SecretSettings(
                    secret_key_file=Path(self.env["SENDRAIL_SECRET_KEY_FILE"])))
                await connect_sample_users(producer, admin, self.info, box, system_clock())
        finally:
            await producer.stop()


def _banner(stack: LocalStack) -> str:
    info = stack.info
    assert stack.analytics_token is not None
    token = stack.analytics_token.token
    lines = [
        "sendrail is running (Ctrl-C stops everything).",
        "",
        f"  Kafka (KRaft)   {stack.broker.bootstrap_servers}   data: {stack.broker.data_dir}",
        *(f"  SMTP {kind:<16} 127.0.0.1:{ep.port} ({ep.auth}, STARTTLS)" for kind, ep in info.smtp.items()),
        f"  IMAP (Dovecot)  {info.imap_host}:{info.imap_port} (XOAUTH2, TLS)",
        f"  OAuth tokens    {info.token_url_google.rsplit('/google', 1)[0]}",
        f"  Mailboxes       {info.maildir_root}/<address>/",
        *(f"  {s.name:<16}http://127.0.0.1:{s.http_port}/healthz  /metrics   log: {s.log_file}"
          for s in stack.services),
        "",
        "Sample users (tenant acme; frank is in legacy tenant oldco):",
        *(f"  {u.user_id:<6} {u.address:<26} via {u.kind.value} ({u.connection_id})"
          for u in SAMPLE_USERS),
        "",
        f"Analytics: http://127.0.0.1:{stack.analytics_port}/?tenant={SAMPLE_TENANT}   "
        f"(API: /api/openapi.json)",
        f"  The page asks for {SAMPLE_TENANT}'s token (revoked when this stack stops); paste this one:",
        f"  {token}",
        f"  curl -H 'Authorization: Bearer {token}' \\",
        f"      http://127.0.0.1:{stack.analytics_port}/api/tenants/{SAMPLE_TENANT}/summary",
        f"  A token of your own: .venv/bin/sendrail analytics token create --tenant {SAMPLE_TENANT}",
        "",
        "Try, in another terminal:",
        "  .venv/bin/sendrail tail delivery",
        "  .venv/bin/sendrail send --tenant acme --user alice --identity alice@acme.example.com \\",
        "      --to someone@example.org --subject Hello --text 'Hi there'",
        f"  .venv/bin/sendrail send ... --to nobody@{info.bounce_domain}"
        "   (bounces; see `sendrail tail bounces`)",
        "  make demo",
    ]
    return "\n".join(lines)


async def run_local_stack() -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with LocalStack(RUN_DIR, kafka_port=LOCAL_KAFKA_PORT,
                          analytics_port=LOCAL_ANALYTICS_PORT) as stack:
        await stack.connect_sample_users()
        print(_banner(stack), flush=True)
        await stop.wait()
        print("\nstopping ...", flush=True)
    print("stopped.")
    return 0
