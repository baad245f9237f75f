"""How every Kafka client of the project connects: TLS, SASL, and one clear line when it cannot.

Workers (through Faust's ``broker_credentials``), ``journey produce``, ``journey
tail``, the demo, the benchmark and the tests all build their clients from
:func:`client_kwargs`, so one set of ``JOURNEY_KAFKA_*`` settings reaches them
all. The password is read here, at connection time, from its file if one is set
(a mounted Kubernetes or compose secret), and is handed to aiokafka only.

A wrong password or an untrusted certificate is not a transient fault: retrying
it only fills the log. :func:`check_connection` opens one connection per
bootstrap server before anything else starts and turns the failure into a
single line (:class:`KafkaConnectError`), without the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator
from typing import Any

from aiokafka import errors as kafka_errors
from aiokafka.conn import create_conn
from aiokafka.protocol.metadata import MetadataRequest

from processor.settings import SASL_MECHANISMS, SECURITY_PROTOCOLS, Settings

log = logging.getLogger(__name__)


class KafkaSettingsError(ValueError):
    """The security settings contradict each other or name files that do not exist."""


class KafkaConnectError(RuntimeError):
    """Connecting to Kafka failed for a reason a retry will not fix (or the broker never came)."""


class BrokerUnavailable(KafkaConnectError):
    """Nothing answered at a bootstrap server within the wait (``JOURNEY_BROKER_WAIT``)."""


LOG_EVERY_SECONDS = 5.0
"""How often a client waiting for the broker says so."""


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def validate(settings: Settings) -> None:
    """Refuse inconsistent security settings before any connection is tried."""
    protocol = settings.kafka_security_protocol
    if protocol not in SECURITY_PROTOCOLS:
        raise KafkaSettingsError(
            f"JOURNEY_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, "
            f"not {protocol!r}"
        )
    if uses_sasl(settings):
        if settings.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise KafkaSettingsError(
                f"JOURNEY_KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, "
                f"not {settings.kafka_sasl_mechanism!r}"
            )
        if not settings.kafka_sasl_username:
            raise KafkaSettingsError(f"{protocol} needs JOURNEY_KAFKA_SASL_USERNAME")
        if not settings.kafka_sasl_password_value():
            raise KafkaSettingsError(
                f"{protocol} needs JOURNEY_KAFKA_SASL_PASSWORD_FILE "
                "(or JOURNEY_KAFKA_SASL_PASSWORD)"
            )
    if (settings.kafka_ssl_cert_file is None) != (settings.kafka_ssl_key_file is None):
        raise KafkaSettingsError(
            "mutual TLS needs both JOURNEY_KAFKA_SSL_CERT_FILE and JOURNEY_KAFKA_SSL_KEY_FILE"
        )
    for name in ("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file"):
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            raise KafkaSettingsError(f"JOURNEY_{name.upper()}: no such file {path}")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL: verified, hostname-checked by default, TLS 1.2+."""
    if not uses_tls(settings):
        return None
    ca = settings.kafka_ssl_ca_file
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=None if ca is None else str(ca)
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.kafka_ssl_check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if settings.kafka_ssl_cert_file is not None and settings.kafka_ssl_key_file is not None:
        try:
            context.load_cert_chain(
                str(settings.kafka_ssl_cert_file), str(settings.kafka_ssl_key_file)
            )
        except ssl.SSLError as exc:
            raise KafkaSettingsError(
                f"cannot load the client certificate {settings.kafka_ssl_cert_file} "
                f"and key {settings.kafka_ssl_key_file}: {getattr(exc, 'reason', None) or exc}"
            ) from None
    return context


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka's security arguments (no bootstrap servers) for ``settings``."""
    validate(settings)
    kwargs: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if uses_sasl(settings):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password_value()
    return kwargs


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Everything an AIOKafkaProducer, AIOKafkaConsumer or AIOKafkaAdminClient needs to connect."""
    return {"bootstrap_servers": settings.bootstrap_servers, **security_kwargs(settings)}


def explain(exc: BaseException, settings: Settings) -> str:
    """One line, without secrets, that says why a connection to Kafka failed."""
    who = f"user {settings.kafka_sasl_username!r} with {settings.kafka_sasl_mechanism}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate was rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {getattr(exc, 'reason', None) or exc.strerror or exc}"
    if isinstance(exc, kafka_errors.SaslAuthenticationFailed | kafka_errors.IllegalSaslStateError):
        return f"SASL authentication failed for {who}"
    if isinstance(exc, kafka_errors.UnsupportedSaslMechanismError):
        return f"the broker does not offer SASL {settings.kafka_sasl_mechanism}"
    if isinstance(exc, KeyError | ValueError) and uses_sasl(settings):
        # aiokafka's SCRAM client fails this way on a server-final "e=..." message
        # (unknown user, wrong password): there is no "v=" proof to read.
        return f"SASL authentication failed for {who} (the broker rejected the credentials)"
    if isinstance(exc, ConnectionResetError | asyncio.IncompleteReadError) or (
        isinstance(exc, kafka_errors.KafkaConnectionError) and "closed" in str(exc)
    ):
        hint = (
            " (does it require SASL or TLS? see JOURNEY_KAFKA_SECURITY_PROTOCOL)"
            if settings.kafka_security_protocol == "PLAINTEXT"
            else ""
        )
        return f"the broker closed the connection{hint}"
    if isinstance(exc, TimeoutError):
        return "no answer in time (a TLS listener spoken to in plaintext, or the reverse?)"
    return f"{exc.__class__.__name__}: {exc}"


async def _connect_and_ask(host: str, port: int, kwargs: dict[str, Any]) -> None:
    """Connect, authenticate, and ask for metadata (a broker may take ApiVersions from anyone)."""
    conn = await create_conn(host, port, request_timeout_ms=10000, **kwargs)
    try:
        await conn.send(MetadataRequest([]))
    finally:
        conn.close()


def _unreachable(exc: BaseException) -> bool:
    """Nothing listening (yet): the one failure worth waiting out at start."""
    return isinstance(exc, ConnectionRefusedError | OSError) and not isinstance(exc, ssl.SSLError)


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """aiokafka logs each failed connection itself; the caller prints the one line that counts."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def check_connection(settings: Settings, wait_seconds: float = 60.0) -> None:
    """Connect (and authenticate) once to each bootstrap server; raise KafkaConnectError if not.

    Waits up to ``wait_seconds`` for a broker that is not listening yet (it may be
    starting); TLS and SASL failures are final at once.
    """
    try:
        kwargs = security_kwargs(settings)
    except KafkaSettingsError as exc:
        raise KafkaConnectError(str(exc)) from None
    loop = asyncio.get_running_loop()
    started = loop.time()
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        said = loop.time()
        while True:
            try:
                with _quiet_aiokafka():
                    await asyncio.wait_for(_connect_and_ask(host, int(port), kwargs), 15.0)
                break
            except Exception as exc:
                if not _unreachable(exc):
                    raise KafkaConnectError(
                        f"cannot connect to Kafka at {server} "
                        f"({settings.kafka_security_protocol}): {explain(exc, settings)}"
                    ) from None
                waited = loop.time() - started
                if waited >= wait_seconds:
                    raise BrokerUnavailable(
                        f"no broker answered at {server} within {wait_seconds:g}s "
                        "(JOURNEY_BROKER_WAIT)"
                    ) from None
                if loop.time() - said >= LOG_EVERY_SECONDS:
                    said = loop.time()
                    log.warning(
                        "waiting for the broker at %s (%.0fs of %gs)", server, waited, wait_seconds
                    )
                await asyncio.sleep(0.5)
