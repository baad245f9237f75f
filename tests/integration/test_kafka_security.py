"""A worker and the CLI over TLS and SASL_SSL/SCRAM, and refusals that end a start.

The broker is the real embedded one. Tansu 0.6.0 does not speak TLS and cannot
hold a SCRAM user (see tests/integration/tls.py), so TLS is terminated by a
front in this process, and for the successful SCRAM logins that front verifies
SCRAM itself (with scramp) before piping to Tansu. The refused SCRAM logins are
tested both against that front (answered as Apache Kafka answers) and against
Tansu's own SASL (``--authentication``), which refuses every SCRAM user.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import orjson
import pytest

from processor.broker import EmbeddedBroker, free_port
from processor.settings import Secret, Settings
from tests.integration.conftest import AUTH, WorkerProcess, start_worker
from tests.integration.journeys import event, expected_final
from tests.integration.kafka import Collector, Received
from tests.integration.tls import Issued, ScratchCA, TLSFront

pytestmark = pytest.mark.integration

PASSWORD = "s3cr3t-never-printed"


@dataclass
class SecureBroker:
    url: str
    ca: Path
    client: Issued
    rogue_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScratchCA, ScratchCA]:
    directory = tmp_path_factory.mktemp("pki")
    return ScratchCA("journey-test-ca", directory / "good"), ScratchCA(
        "rogue-ca", directory / "rogue"
    )


def _fronted(
    tmp: Path,
    ca: ScratchCA,
    *,
    authentication: bool,
    client_ca: Path | None,
    scram_users: dict[str, str] | None = None,
) -> Iterator[str]:
    front_port = free_port()
    server = ca.issue("broker", server=True, hosts=("localhost", "127.0.0.1"))
    broker = EmbeddedBroker(
        log_path=tmp / "tansu.log",
        advertised=f"localhost:{front_port}",
        authentication=authentication,
    )
    with broker:  # started first: the front needs its port
        front = TLSFront(
            server, broker.port, front_port, client_ca=client_ca, scram_users=scram_users or {}
        )
        with front.running():
            yield f"kafka://localhost:{front_port}"


@pytest.fixture(scope="module")
def mtls_broker(
    tmp_path_factory: pytest.TempPathFactory, pki: tuple[ScratchCA, ScratchCA]
) -> Iterator[SecureBroker]:
    """TLS that requires a client certificate signed by the test CA; no SASL."""
    good, rogue = pki
    client = good.issue("journey-worker", server=False)
    for url in _fronted(
        tmp_path_factory.mktemp("mtls"), good, authentication=False, client_ca=good.cert_file
    ):
        yield SecureBroker(url, good.cert_file, client, rogue.cert_file)


@pytest.fixture(scope="module")
def sasl_ssl_broker(
    tmp_path_factory: pytest.TempPathFactory, pki: tuple[ScratchCA, ScratchCA]
) -> Iterator[str]:
    """TLS in front of a Tansu that requires SASL."""
    good, _ = pki
    yield from _fronted(tmp_path_factory.mktemp("sasl"), good, authentication=True, client_ca=None)


@pytest.fixture(scope="module")
def scram_broker(
    tmp_path_factory: pytest.TempPathFactory, pki: tuple[ScratchCA, ScratchCA]
) -> Iterator[str]:
    """TLS and a SCRAM login (user ``journey``) in front of Tansu."""
    good, _ = pki
    yield from _fronted(
        tmp_path_factory.mktemp("scram"),
        good,
        authentication=False,
        client_ca=None,
        scram_users={"journey": PASSWORD},
    )


def over_scram(
    settings: Settings, url: str, ca: Path, password_file: Path, mechanism: str
) -> Settings:
    return replace(
        settings,
        broker_url=url,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="journey",
        kafka_sasl_password_file=password_file,
        kafka_ssl_ca_file=ca,
    )


def over_mtls(settings: Settings, broker: SecureBroker) -> Settings:
    return replace(
        settings,
        broker_url=broker.url,
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=broker.ca,
        kafka_ssl_cert_file=broker.client.cert,
        kafka_ssl_key_file=broker.client.key,
    )


def start_failing_worker(settings: Settings) -> subprocess.CompletedProcess[str]:
    """Run a worker that must give up by itself; its whole output comes back."""
    return subprocess.run(
        [sys.executable, "-m", "processor", "worker"],
        env=settings.environment(),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def run_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    """``journey ARGS`` with exactly these settings; its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "processor",
        *args,
        env=settings.environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def assert_one_clear_line(run: subprocess.CompletedProcess[str], *expected: str) -> str:
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    errors = [line for line in output.splitlines() if "cannot connect to Kafka" in line]
    assert len(errors) == 1, output
    for text in expected:
        assert text in errors[0], errors[0]
    assert "Traceback" not in output, output
    assert "waiting for the broker" not in output, output  # refused at once, not retried
    assert PASSWORD not in output
    return errors[0]


async def test_worker_and_cli_over_mutual_tls(
    settings: Settings,
    workers: list[WorkerProcess],
    tmp_path: Path,
    mtls_broker: SecureBroker,
    pki: tuple[ScratchCA, ScratchCA],
) -> None:
    """Kafka over mutual TLS, and the worker's own HTTP port over HTTPS."""
    web = pki[0].issue("worker-web", server=True, hosts=("127.0.0.1",))
    secure = replace(
        over_mtls(settings, mtls_broker),
        web_tls_cert_file=web.cert,
        web_tls_key_file=web.key,
        web_tls_ca_file=pki[0].cert_file,
    )
    assert secure.kafka_ssl_check_hostname  # the default: the certificate names localhost
    worker = start_worker(workers, secure, tmp_path, "tls")
    sent = [event(f"tls-{i}", "clickstream", "page_view", i) for i in range(20)]
    sent += [event(f"tls-{i}", "clickstream", "order_completed", 30 + i) for i in range(0, 20, 2)]
    expected = expected_final(secure, sent)
    lines = tmp_path / "events.jsonl"
    lines.write_bytes(
        b"\n".join(orjson.dumps(orjson.loads(s.value) | {"source": s.source}) for s in sent)
    )

    async with Collector(secure, secure.stage_changes_topic) as changes:
        code, out, err = await run_cli(secure, "produce", str(lines))
        assert code == 0, err
        assert f"sent {len(sent)} events" in out

        def done(records: list[Received]) -> bool:
            latest = {r.doc["customer_id"]: r.doc["to_stage"] for r in records}
            return latest == {c: s.stage for c, s in expected.items()}

        await changes.wait_until(done, 120, "every customer's final stage over TLS")

    code, out, err = await run_cli(secure, "tail", "--from-beginning", "--limit", "3")
    assert code == 0, err
    assert len(out.splitlines()) == 3

    # HTTPS on the web port, verified against the test CA; plain HTTP gets nowhere.
    trusted = ssl.create_default_context(cafile=str(pki[0].cert_file))
    base = f"https://127.0.0.1:{worker.settings.web_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/customers/tls-0", headers=AUTH, ssl=trusted) as r:
            assert r.status == 200 and (await r.json())["served_by"].startswith("https://")
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{worker.settings.web_port}/healthz"):
                pass


def test_untrusted_broker_certificate_ends_the_start(
    settings: Settings, mtls_broker: SecureBroker
) -> None:
    rogue = replace(over_mtls(settings, mtls_broker), kafka_ssl_ca_file=mtls_broker.rogue_ca)
    assert_one_clear_line(start_failing_worker(rogue), "certificate was rejected")


def test_missing_client_certificate_ends_the_start(
    settings: Settings, mtls_broker: SecureBroker
) -> None:
    no_cert = replace(
        over_mtls(settings, mtls_broker), kafka_ssl_cert_file=None, kafka_ssl_key_file=None
    )
    assert_one_clear_line(start_failing_worker(no_cert), "localhost:")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_rejected_scram_login_over_sasl_ssl_ends_the_start(
    settings: Settings,
    sasl_ssl_broker: str,
    pki: tuple[ScratchCA, ScratchCA],
    tmp_path: Path,
    mechanism: str,
) -> None:
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    sasl = replace(
        settings,
        broker_url=sasl_ssl_broker,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="journey",
        kafka_sasl_password_file=password_file,
        kafka_ssl_ca_file=pki[0].cert_file,
    )
    env = sasl.environment()
    assert PASSWORD not in "".join(env.values())  # the child gets the file's path
    line = assert_one_clear_line(
        start_failing_worker(sasl), "SASL authentication failed", "'journey'", mechanism
    )
    assert "SASL_SSL" in line


def test_plaintext_client_of_a_sasl_broker_is_told_why(
    settings: Settings, sasl_ssl_broker: str, pki: tuple[ScratchCA, ScratchCA]
) -> None:
    """TLS is right, SASL is missing: the broker hangs up, and the line says what to check."""
    tls_only = replace(
        settings,
        broker_url=sasl_ssl_broker,
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=pki[0].cert_file,
        kafka_sasl_password=Secret(PASSWORD),
    )
    assert_one_clear_line(start_failing_worker(tls_only), "closed the connection")


async def test_worker_and_cli_over_sasl_ssl_with_scram(
    settings: Settings,
    workers: list[WorkerProcess],
    tmp_path: Path,
    scram_broker: str,
    pki: tuple[ScratchCA, ScratchCA],
) -> None:
    """The worker logs in with SCRAM-SHA-512, ``journey produce`` with SCRAM-SHA-256."""
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    secure = over_scram(settings, scram_broker, pki[0].cert_file, password_file, "SCRAM-SHA-512")
    worker = start_worker(workers, secure, tmp_path, "scram")
    sent = [event(f"scram-{i}", "clickstream", "page_view", i) for i in range(10)]
    sent += [event(f"scram-{i}", "research", "comparison_view", 20 + i) for i in range(0, 10, 3)]
    expected = expected_final(secure, sent)
    lines = tmp_path / "events.jsonl"
    lines.write_bytes(
        b"\n".join(orjson.dumps(orjson.loads(s.value) | {"source": s.source}) for s in sent)
    )
    async with Collector(secure, secure.stage_changes_topic) as changes:
        producer = replace(secure, kafka_sasl_mechanism="SCRAM-SHA-256")
        code, out, err = await run_cli(producer, "produce", str(lines))
        assert code == 0 and f"sent {len(sent)} events" in out, err

        def done(records: list[Received]) -> bool:
            latest = {r.doc["customer_id"]: r.doc["to_stage"] for r in records}
            return latest == {c: s.stage for c, s in expected.items()}

        await changes.wait_until(done, 120, "every customer's final stage over SASL_SSL")
    assert PASSWORD not in worker.log_path.read_text(errors="replace")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_wrong_scram_password_ends_the_start(
    settings: Settings,
    scram_broker: str,
    pki: tuple[ScratchCA, ScratchCA],
    tmp_path: Path,
    mechanism: str,
) -> None:
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "-but-wrong\n")
    wrong = over_scram(settings, scram_broker, pki[0].cert_file, password_file, mechanism)
    run = start_failing_worker(wrong)
    assert_one_clear_line(run, "SASL authentication failed for user 'journey'", mechanism)
    assert "-but-wrong" not in run.stdout + run.stderr


def test_a_certificate_for_another_host_ends_the_start(
    settings: Settings, pki: tuple[ScratchCA, ScratchCA]
) -> None:
    """Hostname checking is on by default: a trusted certificate for another name is refused."""
    other = pki[0].issue("elsewhere", server=True, hosts=("broker.elsewhere.test",))
    port = free_port()
    with TLSFront(other, upstream_port=free_port(), listen_port=port).running():
        mismatch = replace(
            settings,
            broker_url=f"kafka://localhost:{port}",
            kafka_security_protocol="SSL",
            kafka_ssl_ca_file=pki[0].cert_file,
        )
        line = assert_one_clear_line(start_failing_worker(mismatch), "certificate was rejected")
    assert "Hostname mismatch" in line or "hostname" in line.lower()
