"""Access control over a real grpc.aio server: bearer token, TLS, mTLS, bind refusal.

The server is memoryd's API listener with the handler wrapping and credentials the
daemon uses (memoryd.handlers / memoryd.auth); clients are memoryd_client's.
Certificates are generated per test session with the openssl CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from memoryd_client import (
    AsyncMemoryClient,
    PermissionDeniedError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
    pb,
)
from memoryd_client.v1 import memory_pb2_grpc as pb_grpc

from memoryd import auth
from memoryd.cli import check_bind
from memoryd.config.model import default_project
from memoryd.handlers import Listener
from memoryd.manager import MemoryManager
from memoryd.metrics import Metrics
from memoryd.server import register_api
from memoryd.service import MemoryService
from memoryd.settings import Settings
from memoryd.store.embedded import EmbeddedStore

MEM = "default"
TOKEN = "s3cret-token-0123456789abcdef"
SERVICE = pb.DESCRIPTOR.services_by_name["MemoryService"].full_name
NO_RETRY = RetryPolicy(attempts=1)


@contextlib.asynccontextmanager
async def serve(
    *, token: str | None = None, credentials: grpc.ServerCredentials | None = None
) -> AsyncIterator[tuple[str, Metrics]]:
    """memoryd's API listener: MemoryService + health + reflection, registered as the daemon does."""
    settings = Settings()
    manager = MemoryManager(default_project(), EmbeddedStore(), settings)
    await manager.start()
    metrics = Metrics(resources=[MEM])
    guard = auth.TokenCheck(token) if token else None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    register_api(Listener(server, metrics, guard, auth.EXEMPT_PREFIXES), MemoryService(manager, asyncio.Event()),
                 health.aio.HealthServicer())
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{port}", metrics
    finally:
        await server.stop(0)
        await manager.close()


async def round_trip(client: AsyncMemoryClient, key: str) -> list[str]:
    await client.append(MEM, [{"role": "user", "content": "hello"}], key=key)
    return [m.content for m in await client.read_all(MEM, key=key, view="raw")]


# -- bearer token -------------------------------------------------------------------------


async def test_no_token_is_unauthenticated_wrong_token_denied_right_token_served() -> None:
    async with serve(token=TOKEN) as (addr, metrics):
        async with AsyncMemoryClient(addr, retry=NO_RETRY) as anonymous:
            with pytest.raises(UnauthenticatedError, match="missing credentials"):
                await anonymous.append(MEM, [{"role": "user", "content": "x"}], key="k")
            with pytest.raises(UnauthenticatedError):
                await anonymous.read_all(MEM, key="k", view="raw")  # server-streaming is guarded too
        async with AsyncMemoryClient(addr, token="wrong-token", retry=NO_RETRY) as wrong:
            with pytest.raises(PermissionDeniedError, match="invalid bearer token"):
                await wrong.append(MEM, [{"role": "user", "content": "x"}], key="k")
            with pytest.raises(PermissionDeniedError):
                await wrong.read_all(MEM, key="k", view="raw")
        async with AsyncMemoryClient(addr, token=TOKEN) as right:
            assert await round_trip(right, "k") == ["hello"]  # refused calls stored nothing
        value = metrics.registry.get_sample_value
        append = {"grpc_service": SERVICE, "grpc_method": "Append", "grpc_type": "unary"}
        assert value("grpc_server_handled_total", {**append, "grpc_code": "UNAUTHENTICATED"}) == 1
        assert value("grpc_server_handled_total", {**append, "grpc_code": "PERMISSION_DENIED"}) == 1
        assert value("grpc_server_handled_total", {**append, "grpc_code": "OK"}) == 1


async def test_malformed_authorization_is_unauthenticated() -> None:
    async with serve(token=TOKEN) as (addr, _), grpc.aio.insecure_channel(addr) as ch:
        stub = pb_grpc.MemoryServiceStub(ch)
        for header in (f"Basic {TOKEN}", "Bearer", "Bearer    ", TOKEN):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetStats(pb.GetStatsRequest(ref=pb.MemoryRef(memory_id=MEM, key="k")),
                                    metadata=(("authorization", header),))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, header
        ok = await stub.GetStats(pb.GetStatsRequest(ref=pb.MemoryRef(memory_id=MEM, key="k")),
                                 metadata=(("authorization", f"bearer {TOKEN}"),))  # scheme is case-insensitive
        assert ok.stats.message_count == 0


async def test_health_is_open_and_reflection_needs_the_token() -> None:
    async with serve(token=TOKEN) as (addr, _), grpc.aio.insecure_channel(addr) as ch:
        health_stub = health_pb2_grpc.HealthStub(ch)
        checked = await health_stub.Check(health_pb2.HealthCheckRequest(service=""))
        assert checked.status == health_pb2.HealthCheckResponse.SERVING
        watch = health_stub.Watch(health_pb2.HealthCheckRequest(service=""))  # streaming, context.write style
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()

        reflect = reflection_pb2_grpc.ServerReflectionStub(ch)
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in reflect.ServerReflectionInfo(iter([listing])):
                pass
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        names = [
            s.name
            async for resp in reflect.ServerReflectionInfo(iter([listing]),
                                                           metadata=(("authorization", f"Bearer {TOKEN}"),))
            for s in resp.list_services_response.service
        ]
        assert SERVICE in names


def test_load_token_from_file_or_env(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    from_file = Settings(auth_token_file=str(path))
    assert auth.load_token(from_file, env={}) == TOKEN
    assert auth.load_token(from_file, env={auth.TOKEN_ENV: "other"}) == TOKEN  # the file wins
    assert auth.load_token(Settings(), env={auth.TOKEN_ENV: " envtoken \n"}) == "envtoken"
    assert auth.load_token(Settings(), env={}) is None
    assert auth.from_settings(Settings(), env={}) is None
    assert isinstance(auth.from_settings(from_file, env={}), auth.TokenCheck)


@pytest.mark.parametrize(("content", "problem"), [("\n", "empty"), ("two words", "without spaces")])
def test_bad_token_file_is_refused_naming_the_setting(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"--auth-token-file: .*{problem}"):
        auth.load_token(Settings(auth_token_file=str(path)), env={})
    with pytest.raises(ValueError, match=r"--auth-token-file .*missing"):
        auth.load_token(Settings(auth_token_file=str(tmp_path / "missing")), env={})


# -- bind refusal ----------------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["127.0.0.1:50051", "[::1]:50051", "localhost:50051", "unix:/tmp/m.sock"])
def test_loopback_and_unix_binds_need_nothing(listen: str) -> None:
    check_bind(Settings(listen=listen))


def test_non_loopback_bind_is_refused_without_token_or_tls(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEMORYD_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="--allow-insecure-bind"):
        check_bind(Settings(listen="0.0.0.0:50051"))
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    check_bind(Settings(listen="0.0.0.0:50051", auth_token_file=str(token)))
    check_bind(Settings(listen="0.0.0.0:50051", tls_cert=str(pki.server_cert), tls_key=str(pki.server_key)))
    check_bind(Settings(listen="0.0.0.0:50051", allow_insecure_bind=True))
    with pytest.raises(ValueError, match="--auth-token-file"):  # a bad file fails before anything starts
        check_bind(Settings(listen="127.0.0.1:1", auth_token_file=str(tmp_path / "missing")))


# -- TLS and mTLS ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: bytes
    server_cert: Path
    server_key: Path
    client_cert: bytes
    client_key: bytes
    rogue_cert: bytes  # self-signed: not issued by the CA
    rogue_key: bytes
    ca_path: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(name: str, cn: str, cwd: Path, ext: str) -> None:
    (cwd / f"{name}.ext").write_text(ext)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=cwd)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=memoryd test CA", cwd=d)
    _issue("server", "localhost", d, "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _issue("client", "agent-1", d, "extendedKeyUsage=clientAuth\n")
    _openssl("req", "-x509", *ec, "-keyout", "rogue.key", "-out", "rogue.crt", "-subj", "/CN=rogue", cwd=d)
    return Pki(
        ca=(d / "ca.crt").read_bytes(), server_cert=d / "server.crt", server_key=d / "server.key",
        client_cert=(d / "client.crt").read_bytes(), client_key=(d / "client.key").read_bytes(),
        rogue_cert=(d / "rogue.crt").read_bytes(), rogue_key=(d / "rogue.key").read_bytes(), ca_path=d / "ca.crt",
    )


def tls_settings(pki: Pki, *, mtls: bool) -> Settings:
    return Settings(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key),
                    tls_client_ca=str(pki.ca_path) if mtls else "")


async def test_tls_round_trip_with_a_generated_certificate(pki: Pki) -> None:
    creds = auth.server_credentials(tls_settings(pki, mtls=False))
    assert creds is not None
    async with serve(credentials=creds, token=TOKEN) as (addr, _):
        client_creds = grpc.ssl_channel_credentials(root_certificates=pki.ca)
        async with AsyncMemoryClient(addr, credentials=client_creds, token=TOKEN) as c:
            assert await round_trip(c, "tls") == ["hello"]
        async with AsyncMemoryClient(addr, retry=NO_RETRY, token=TOKEN) as plaintext:
            with pytest.raises(UnavailableError):
                await plaintext.stats(MEM, key="tls")


async def test_mtls_requires_a_client_certificate_from_the_ca(pki: Pki) -> None:
    creds = auth.server_credentials(tls_settings(pki, mtls=True))
    assert creds is not None
    async with serve(credentials=creds) as (addr, _):
        with_cert = grpc.ssl_channel_credentials(pki.ca, private_key=pki.client_key, certificate_chain=pki.client_cert)
        async with AsyncMemoryClient(addr, credentials=with_cert) as c:
            assert await round_trip(c, "mtls") == ["hello"]
        for rejected in (
            grpc.ssl_channel_credentials(pki.ca),  # no client certificate
            grpc.ssl_channel_credentials(pki.ca, private_key=pki.rogue_key, certificate_chain=pki.rogue_cert),
        ):
            async with AsyncMemoryClient(addr, credentials=rejected, retry=NO_RETRY) as bad:
                with pytest.raises(UnavailableError):
                    await bad.stats(MEM, key="mtls")


async def test_client_connects_from_the_charts_environment(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent in a pod set up by the chart gets MEMORYD_ADDR, MEMORYD_TOKEN_FILE and
    MEMORYD_TLS_CA_FILE; a client created without arguments uses all three."""
    creds = auth.server_credentials(tls_settings(pki, mtls=False))
    assert creds is not None
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    async with serve(credentials=creds, token=TOKEN) as (addr, _):
        monkeypatch.setenv("MEMORYD_ADDR", addr)
        monkeypatch.setenv("MEMORYD_TOKEN_FILE", str(token_file))
        monkeypatch.setenv("MEMORYD_TLS_CA_FILE", str(pki.ca_path))
        async with AsyncMemoryClient() as c:
            assert await round_trip(c, "from-env") == ["hello"]
        # What the caller passes wins over the environment.
        async with AsyncMemoryClient(addr, token="wrong-token", retry=NO_RETRY) as wrong:
            with pytest.raises(PermissionDeniedError, match="invalid bearer token"):
                await wrong.stats(MEM, key="from-env")
        monkeypatch.setenv("MEMORYD_TOKEN_FILE", str(tmp_path / "missing"))
        with pytest.raises(FileNotFoundError, match="missing"):
            AsyncMemoryClient()


def test_server_credentials_settings_errors(pki: Pki, tmp_path: Path) -> None:
    assert auth.server_credentials(Settings()) is None
    with pytest.raises(ValueError, match="--tls-client-ca needs --tls-cert"):
        auth.server_credentials(Settings(tls_client_ca=str(pki.ca_path)))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ValueError, match=r"--tls-cert .*not a PEM file"):
        auth.server_credentials(Settings(tls_cert=str(junk), tls_key=str(pki.server_key)))
    with pytest.raises(ValueError, match=r"--tls-key .*No such file"):
        auth.server_credentials(Settings(tls_cert=str(pki.server_cert), tls_key=str(tmp_path / "nope")))
