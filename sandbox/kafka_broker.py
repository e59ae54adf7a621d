"""An Apache Kafka (KRaft) node run from the jars `make setup` fetched from Maven Central.

The tests start one for the whole run and `make run` one with its data kept on disk;
production points sendrail at any Kafka cluster instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import uuid
from pathlib import Path

from sendrail.sandbox.ports import free_port
from sendrail.sandbox.processes import stop_process

DEFAULT_JARS_DIR = Path(".cache/kafka/libs")
"""Where `make setup` puts the broker's jars (the version is set in sandbox/kafka-pom.xml)."""


def _server_properties(data_dir: Path, port: int, controller_port: int, *, node_id: int,
                       voters: str | None, replication_factor: int) -> str:
    """One node that is both broker and controller: alone (`voters` None), or one of a
    static quorum (`voters`: "1@host:port,2@host:port,..."), with internal topics
    replicated `replication_factor` times and acks=all writes needing all but one replica."""
    quorum = (f"controller.quorum.voters={voters}" if voters is not None
              else f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}")
    min_isr = max(1, replication_factor - 1)
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node_id}",
        quorum,
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={data_dir / 'logs'}",
        "num.partitions=6",
        f"default.replication.factor={replication_factor}",
        f"min.insync.replicas={min_isr}",
        f"offsets.topic.replication.factor={replication_factor}",
        "offsets.topic.num.partitions=6",
        f"transaction.state.log.replication.factor={replication_factor}",
        f"transaction.state.log.min.isr={min_isr}",
        f"share.coordinator.state.topic.replication.factor={replication_factor}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=false",
        "log.cleaner.min.compaction.lag.ms=0",
        "",
    ])


class KafkaBroker:
    """`start()` returns once the broker accepts connections; `stop()` shuts it down cleanly.
    A node of a cluster (`KafkaCluster`) is given its id, its controller port and the
    quorum's voters; it can be started again on its data after `kill()`."""

    def __init__(self, data_dir: Path, *, port: int, jars_dir: Path = DEFAULT_JARS_DIR,
                 heap_mb: int = 512, node_id: int = 1, controller_port: int | None = None,
                 voters: str | None = None, replication_factor: int = 1,
                 cluster_id: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.node_id = node_id
        self.controller_port = controller_port if controller_port is not None else free_port()
        self._voters = voters
        self._replication_factor = replication_factor
        self._cluster_id = cluster_id
        self._jars_dir = jars_dir
        self._heap_mb = heap_mb
        self._process: asyncio.subprocess.Process | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    async def start(self, *, timeout_s: float = 60.0) -> None:
        if not any(self._jars_dir.glob("kafka_2.13-*.jar")):
            raise FileNotFoundError(f"no Kafka jars in {self._jars_dir}: run `make setup` first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = self.data_dir / "server.properties"
        properties.write_text(_server_properties(
            self.data_dir, self.port, self.controller_port, node_id=self.node_id,
            voters=self._voters, replication_factor=self._replication_factor))
        classpath = f"{self._jars_dir.resolve()}/*"
        java = ["java", f"-Xmx{self._heap_mb}m", f"-Xms{self._heap_mb // 2}m", "-XX:+UseG1GC",
                "-Djava.awt.headless=true", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info",
                "-Dorg.slf4j.simpleLogger.showDateTime=true", "-cp", classpath]
        log = self.log_file.open("ab")
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = self._cluster_id or new_cluster_id()
            formatter = await asyncio.create_subprocess_exec(
                *java, "kafka.tools.StorageTool", "format",
                *(["--standalone"] if self._voters is None else []),
                # One token: a random id may start with "-", which would read as an option.
                f"--cluster-id={cluster_id}",
                "-c", str(properties), stdout=log, stderr=log,
            )
            if await formatter.wait() != 0:
                raise RuntimeError(f"formatting Kafka storage failed; see {self.log_file}")
        self._process = await asyncio.create_subprocess_exec(
            *java, "kafka.Kafka", str(properties), stdout=log, stderr=log,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
        )
        log.close()
        try:
            await self._wait_until_listening(timeout_s)
        except BaseException:
            await self.stop()
            raise

    async def _wait_until_listening(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            assert self._process is not None
            if self._process.returncode is not None:
                raise RuntimeError(f"Kafka exited with {self._process.returncode}; see {self.log_file}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            if loop.time() > deadline:
                raise TimeoutError(f"Kafka did not listen on {self.port} within {timeout_s}s; "
                                   f"see {self.log_file}")
            await asyncio.sleep(0.1)

    async def stop(self, *, timeout_s: float = 20.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            await stop_process(process, timeout_s=timeout_s, whole_group=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def kill(self) -> None:
        """SIGKILL, as a crashed machine would leave it: no shutdown, no flush."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    def pause(self) -> None:
        """SIGSTOP: a broker that stalls (a long GC pause, a frozen VM) and holds its sockets."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is None or self._process.returncode is not None:
            raise RuntimeError(f"broker {self.node_id} is not running")
        os.killpg(self._process.pid, signum)


def new_cluster_id() -> str:
    """A random cluster id in Kafka's form: 16 bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
