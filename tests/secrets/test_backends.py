"""External secret backends: env and file read what they are given and say why when they cannot;
Vault is read through hvac against a stand-in for Vault's KV HTTP API (no Vault server can be
installed here), with its errors mapped to messages, a TTL cache and namespaces; no message ever
carries a secret value."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from pilothouse.secrets.backends import (
    EnvBackend,
    FileBackend,
    SecretUnavailable,
    VaultBackend,
    VaultConfig,
    external_backends,
)

CANARY = "canary-value-3b9f1e7d52"
TOKEN = "hvs.stand-in-token-0a1b2c"
STOP_TIMEOUT = 5.0


# --- env ---------------------------------------------------------------------------------


async def test_env_reads_the_variable_from_the_mapping_it_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ONLY_IN_OS_ENVIRON", "not-this")
    backend = EnvBackend({"GITHUB_TOKEN": CANARY})
    assert await backend.read("GITHUB_TOKEN") == CANARY
    with pytest.raises(SecretUnavailable):
        await backend.read("ONLY_IN_OS_ENVIRON")  # os.environ itself is never consulted


@pytest.mark.parametrize(("environ", "state"), [({}, "unset"), ({"GITHUB_TOKEN": ""}, "empty")])
async def test_env_unset_or_empty_is_unavailable_and_names_the_variable(
    environ: dict[str, str], state: str
) -> None:
    with pytest.raises(SecretUnavailable) as caught:
        await EnvBackend({**environ, "OTHER": CANARY}).read("GITHUB_TOKEN")
    error = caught.value
    assert (error.status, error.code) == (503, "secret_unavailable")
    assert f"GITHUB_TOKEN is {state}" in error.message
    assert error.body()["error"]["code"] == "secret_unavailable"
    assert CANARY not in error.message


@pytest.mark.parametrize("ref", ["", "1PASSWORD", "GITHUB-TOKEN", "A B", "ÄPI_KEY", CANARY])
def test_env_check_ref_refuses_what_is_not_a_variable_name_without_echoing_it(ref: str) -> None:
    with pytest.raises(ValueError, match="environment variable name") as caught:
        EnvBackend({}).check_ref(ref)
    assert CANARY not in str(caught.value)


def test_env_check_ref_accepts_variable_names() -> None:
    for ref in ("GITHUB_TOKEN", "_private", "a1"):
        EnvBackend({}).check_ref(ref)


async def test_a_malformed_reference_that_was_stored_anyway_reads_as_unavailable() -> None:
    with pytest.raises(SecretUnavailable, match="env secret reference is malformed") as caught:
        await EnvBackend({CANARY: "x"}).read(f"{CANARY}!")
    assert CANARY not in caught.value.message


# --- file --------------------------------------------------------------------------------


async def test_file_reads_relative_refs_from_the_base_dir_and_absolute_refs_as_given(
    tmp_path: Path,
) -> None:
    base = tmp_path / "config"
    (base / "secrets").mkdir(parents=True)
    (base / "secrets" / "token").write_text(f"{CANARY}\n")
    elsewhere = tmp_path / "mounted" / "api-key"
    elsewhere.parent.mkdir()
    elsewhere.write_text(f"  other-{CANARY}\r\n\n")
    backend = FileBackend(base)
    assert await backend.read("secrets/token") == CANARY
    assert await backend.read(str(elsewhere)) == f"other-{CANARY}"


async def test_a_missing_file_is_unavailable_naming_the_path_and_the_os_reason(
    tmp_path: Path,
) -> None:
    (tmp_path / "present").write_text(CANARY)
    with pytest.raises(SecretUnavailable) as caught:
        await FileBackend(tmp_path).read("absent")
    assert caught.value.message == (
        f"cannot read secret file {tmp_path / 'absent'}: No such file or directory"
    )
    with pytest.raises(SecretUnavailable, match="Is a directory"):
        await FileBackend(tmp_path.parent).read(tmp_path.name)


async def test_an_empty_or_non_utf8_file_is_unavailable_without_quoting_its_bytes(
    tmp_path: Path,
) -> None:
    (tmp_path / "blank").write_text(" \n")
    (tmp_path / "binary").write_bytes(CANARY.encode() + b"\xff\xfe")
    backend = FileBackend(tmp_path)
    with pytest.raises(SecretUnavailable, match="blank is empty"):
        await backend.read("blank")
    with pytest.raises(SecretUnavailable, match="is not UTF-8 text") as caught:
        await backend.read("binary")
    assert CANARY not in caught.value.message
    assert caught.value.__cause__ is None  # the decode error would quote the bytes


@pytest.mark.parametrize("ref", ["", "   ", "a\0b"])
def test_file_check_ref_refuses_an_empty_path_or_a_nul(ref: str) -> None:
    with pytest.raises(ValueError, match="file reference"):
        FileBackend(Path()).check_ref(ref)


# --- the Vault stand-in ------------------------------------------------------------------


@dataclass
class StandInVault:
    """A stand-in for Vault's KV HTTP API: only the reads hvac sends for KV v1 and v2.

    ``GET /v1/<mount>/data/<path>`` (v2) answers ``{"data": {"data": ..., "metadata": ...}}``,
    ``GET /v1/<mount>/<path>`` (v1) answers ``{"data": ...}``; a wrong ``X-Vault-Token`` is a 403
    ``{"errors": ["permission denied"]}``, an unknown path (or another namespace than
    ``namespace``) a 404 ``{"errors": []}``, and ``sealed`` answers 503 as a sealed Vault does.
    """

    url: str
    secrets: dict[str, dict[str, Any]]  # "<mount>/<path>" -> fields
    mounts: dict[str, int]  # mount -> KV version
    namespace: str | None = None
    sealed: bool = False
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def answer(self, url_path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Status and JSON body for a GET of ``url_path``."""
        self.requests.append((url_path, headers))
        if self.sealed:
            return 503, {"errors": ["Vault is sealed"]}
        if headers.get("x-vault-token") != TOKEN:
            return 403, {"errors": ["permission denied"]}
        if headers.get("x-vault-namespace") != self.namespace:
            return 404, {"errors": []}
        rest = url_path.removeprefix("/v1/")
        for mount, version in self.mounts.items():
            if not rest.startswith(f"{mount}/"):
                continue
            path = rest.removeprefix(f"{mount}/")
            if version == 2:
                if not path.startswith("data/"):
                    break
                path = path.removeprefix("data/")
            fields = self.secrets.get(f"{mount}/{path}")
            if fields is None:
                break
            if version == 1:
                return 200, {"data": fields, "lease_duration": 2764800}
            metadata = {"version": 3, "deletion_time": "", "destroyed": False}
            return 200, {"data": {"data": fields, "metadata": metadata}}
        return 404, {"errors": []}


def _handler(vault: StandInVault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body = vault.answer(self.path, headers)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")  # hvac parses errors only then
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def vault() -> Iterator[StandInVault]:
    """The stand-in on a free loopback port, with a v2 mount ``secret`` and a v1 mount ``kv``."""
    stand_in = StandInVault(
        url="",
        secrets={
            "secret/ci/github": {"token": CANARY, "user": "pilothouse-bot", "port": 8200},
            "secret/ci/empty": {"token": ""},
            "kv/legacy/db": {"password": f"v1-{CANARY}"},
        },
        mounts={"secret": 2, "kv": 1},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stand_in))
    stand_in.url = f"http://127.0.0.1:{server.server_port}"
    # A short poll interval so that shutdown() returns quickly at teardown.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="vault-stand-in"
    )
    thread.start()
    try:
        yield stand_in
    finally:
        server.shutdown()
        thread.join(STOP_TIMEOUT)
        server.server_close()
        assert not thread.is_alive(), "the Vault stand-in did not stop in time"


def _closed_port() -> int:
    """A loopback port nothing listens on (tests.servers.free_port would load the whole app)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MakeBackend = Callable[..., VaultBackend]


@pytest.fixture
async def offline() -> AsyncIterator[VaultBackend]:
    """A VaultBackend for what needs no Vault (building one sends nothing)."""
    backend = VaultBackend(VaultConfig(url="http://127.0.0.1:1", token=SecretStr(TOKEN)))
    yield backend
    await backend.aclose()


@pytest.fixture
async def make_backend(vault: StandInVault) -> AsyncIterator[MakeBackend]:
    """Build VaultBackends against the stand-in (settings overridable); all closed afterwards."""
    made: list[VaultBackend] = []

    def make(monotonic: Callable[[], float] = time.monotonic, **settings: Any) -> VaultBackend:
        config = VaultConfig(**{"url": vault.url, "token": SecretStr(TOKEN), **settings})
        backend = VaultBackend(config, monotonic=monotonic)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


async def _unavailable(backend: VaultBackend, ref: str) -> SecretUnavailable:
    with pytest.raises(SecretUnavailable) as caught:
        await backend.read(ref)
    error = caught.value
    assert (error.status, error.code) == (503, "secret_unavailable")
    for secret in (CANARY, TOKEN):
        assert secret not in error.message
    return error


# --- Vault -------------------------------------------------------------------------------


async def test_vault_reads_a_kv_v2_field_through_hvac(
    vault: StandInVault, make_backend: MakeBackend
) -> None:
    backend = make_backend()
    assert await backend.read("ci/github#token") == CANARY
    ((path, headers),) = vault.requests
    assert path == "/v1/secret/data/ci/github"
    assert headers["x-vault-token"] == TOKEN
    assert "x-vault-namespace" not in headers


async def test_vault_reads_a_kv_v1_field_from_the_mount_path_without_data(
    vault: StandInVault, make_backend: MakeBackend
) -> None:
    backend = make_backend(mount_point="kv", kv_version=1)
    assert await backend.read("legacy/db#password") == f"v1-{CANARY}"
    assert [path for path, _ in vault.requests] == ["/v1/kv/legacy/db"]


async def test_vault_sends_the_configured_namespace(
    vault: StandInVault, make_backend: MakeBackend
) -> None:
    vault.namespace = "team-a"
    assert await make_backend(namespace="team-a").read("ci/github#token") == CANARY
    assert vault.requests[-1][1]["x-vault-namespace"] == "team-a"
    error = await _unavailable(make_backend(), "ci/github#token")  # outside the namespace
    assert "no such secret at secret/ci/github" in error.message


async def test_a_token_vault_refuses_is_unavailable_saying_permission_was_denied(
    vault: StandInVault, make_backend: MakeBackend
) -> None:
    wrong = "hvs.wrong-token-9e8d"
    error = await _unavailable(make_backend(token=SecretStr(wrong)), "ci/github#token")
    assert error.message.startswith("the Vault token may not read secret/ci/github")
    assert "permission denied" in error.message
    assert "secret/data/ci/github" in error.message  # the policy path to grant
    assert wrong not in error.message
    assert vault.requests[-1][1]["x-vault-token"] == wrong


async def test_an_unknown_vault_path_is_unavailable_naming_mount_and_path(
    make_backend: MakeBackend,
) -> None:
    error = await _unavailable(make_backend(), "ci/gitlab#token")
    assert "Vault has no such secret at secret/ci/gitlab" in error.message


async def test_a_missing_field_is_unavailable_listing_field_names_but_no_values(
    make_backend: MakeBackend,
) -> None:
    error = await _unavailable(make_backend(), "ci/github#tokn")
    assert error.message == (
        "the Vault secret at secret/ci/github has no field 'tokn' (its fields: port, token, user)"
    )
    assert "pilothouse-bot" not in error.message


async def test_an_empty_or_non_string_field_is_unavailable(make_backend: MakeBackend) -> None:
    backend = make_backend()
    assert (
        "holds a JSON number, not a string"
        in (await _unavailable(backend, "ci/github#port")).message
    )
    assert (
        "'token' of the Vault secret at secret/ci/empty is empty"
        in (await _unavailable(backend, "ci/empty#token")).message
    )


async def test_a_sealed_vault_is_unavailable_with_vaults_own_reason(
    vault: StandInVault, make_backend: MakeBackend
) -> None:
    vault.sealed = True
    error = await _unavailable(make_backend(), "ci/github#token")
    assert error.message == (
        f"Vault at {vault.url} refused to read secret/ci/github: VaultDown (Vault is sealed)"
    )


async def test_a_vault_nobody_listens_on_cannot_be_reached_well_within_the_timeout(
    make_backend: MakeBackend,
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    error = await _unavailable(make_backend(url=url, timeout_seconds=2), "ci/github#token")
    assert time.monotonic() - started < 2
    assert error.message == f"Vault at {url} cannot be reached: Connection refused"
    assert "Traceback" not in error.message


async def test_a_failed_tls_handshake_with_vault_is_unavailable_saying_tls_failed(
    vault: StandInVault, make_backend: MakeBackend
) -> None:
    url = vault.url.replace("http://", "https://")  # the stand-in speaks plain HTTP
    error = await _unavailable(make_backend(url=url), "ci/github#token")
    assert error.message.startswith(f"Vault at {url} cannot be reached: TLS failed (")
    assert "HTTPSConnectionPool" not in error.message
    assert vault.requests == []


async def test_a_vault_that_never_answers_is_unavailable_after_the_timeout(
    make_backend: MakeBackend,
) -> None:
    # A listening socket that never accepts: the kernel completes the handshake, nobody answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        error = await _unavailable(make_backend(url=url, timeout_seconds=0.3), "ci/github#token")
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 5
    assert error.message == f"Vault at {url} cannot be reached: no answer within 0.3 s" + (
        " (timeout_seconds)"
    )


class FakeMonotonic:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_vault_reads_are_cached_for_cache_seconds_and_invalidate_forces_a_reread(
    vault: StandInVault, make_backend: MakeBackend
) -> None:
    clock = FakeMonotonic()
    backend = make_backend(monotonic=clock, cache_seconds=30)
    assert await backend.read("ci/github#token") == CANARY
    assert await backend.read("ci/github#user") == "pilothouse-bot"  # same secret, one read
    clock.now += 29.9
    assert await backend.read("ci/github#token") == CANARY
    assert len(vault.requests) == 1
    clock.now += 0.1
    await backend.read("ci/github#token")
    assert len(vault.requests) == 2
    backend.invalidate("ci/github#token")
    await backend.read("ci/github#token")
    assert len(vault.requests) == 3
    await backend.read("ci/github#token")
    backend.invalidate()
    await backend.read("ci/github#token")
    assert len(vault.requests) == 4


async def test_cache_seconds_zero_reads_vault_every_time(
    vault: StandInVault, make_backend: MakeBackend
) -> None:
    backend = make_backend(cache_seconds=0)
    for _ in range(3):
        assert await backend.read("ci/github#token") == CANARY
    assert len(vault.requests) == 3


async def test_a_failed_vault_read_is_not_cached(
    vault: StandInVault, make_backend: MakeBackend
) -> None:
    backend = make_backend()
    vault.sealed = True
    await _unavailable(backend, "ci/github#token")
    vault.sealed = False
    assert await backend.read("ci/github#token") == CANARY


@pytest.mark.parametrize(
    "ref",
    [
        "ci/github",
        "ci/github#",
        "#token",
        "/ci/github#token",
        "ci/github/#token",
        "ci//github#token",
        "ci/../sys/mounts#token",
        "./ci#token",
        "ci/git hub#token",
        "ci/github#to#ken",
        "ci/github?list=true#token",
        CANARY,
    ],
)
def test_vault_check_ref_refuses_what_is_not_path_hash_field(
    ref: str, offline: VaultBackend
) -> None:
    with pytest.raises(ValueError, match="vault reference") as caught:
        offline.check_ref(ref)
    assert CANARY not in str(caught.value)


def test_vault_check_ref_accepts_path_hash_field(offline: VaultBackend) -> None:
    for ref in ("ci/github#token", "github#token", "team-a/ci.prod/gh_app#private-key"):
        offline.check_ref(ref)


async def test_a_malformed_vault_reference_reads_as_unavailable_without_asking_vault(
    vault: StandInVault, make_backend: MakeBackend
) -> None:
    error = await _unavailable(make_backend(), "ci/github")
    assert "vault secret reference is malformed" in error.message
    assert vault.requests == []


# --- config, wiring ----------------------------------------------------------------------


def test_vault_config_hides_the_token_and_refuses_unknown_keys_and_bad_urls() -> None:
    config = VaultConfig(url="https://vault.internal:8200", token=SecretStr(TOKEN))
    assert TOKEN not in repr(config) and TOKEN not in str(config.model_dump())
    assert (config.mount_point, config.kv_version, config.cache_seconds) == ("secret", 2, 30)
    assert (config.timeout_seconds, config.verify_tls, config.namespace) == (5, True, None)
    for bad in (
        {"url": "vault.internal:8200"},
        {"tokn": "x"},
        {"kv_version": 3},
        {"mount_point": "/secret/"},
        {"cache_seconds": -1},
        {"token": ""},
    ):
        with pytest.raises(ValidationError):
            VaultConfig(**{"url": "https://vault.internal", "token": TOKEN, **bad})


def test_every_vault_setting_is_described_for_the_generated_docs() -> None:
    undescribed = [n for n, f in VaultConfig.model_fields.items() if not f.description]
    assert undescribed == []


async def test_external_backends_are_env_and_file_plus_vault_when_configured(
    tmp_path: Path,
) -> None:
    plain = external_backends(environ={"A": "1"}, base_dir=tmp_path, vault=None)
    assert {kind: b.kind for kind, b in plain.items()} == {"env": "env", "file": "file"}
    assert await plain["env"].read("A") == "1"
    config = VaultConfig(url="http://127.0.0.1:1", token=SecretStr(TOKEN))
    with_vault = external_backends(environ={}, base_dir=tmp_path, vault=config)
    assert sorted(with_vault) == ["env", "file", "vault"]
    for backend in with_vault.values():
        await backend.aclose()


def test_importing_the_module_for_vault_config_does_not_import_hvac() -> None:
    probe = (
        "import sys, pilothouse.secrets.backends;"
        "print([m for m in ('hvac', 'requests') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={"PATH": os.defpath},
        timeout=60,
    )
    assert done.stdout.strip() == "[]", done.stderr
