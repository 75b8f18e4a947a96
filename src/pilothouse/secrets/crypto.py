"""Envelope encryption of secret values: a data key per secret, wrapped by a master key.

A secret's value is encrypted with AES-256-GCM under a fresh random data key (its own), with the
secret's identity as associated data, so a ciphertext moved to another secret's row does not
open. The data key is itself encrypted (wrapped) with AES-256-GCM under a master key, named by
its id. Rotating the master key re-wraps the data keys only: values are never decrypted to
rotate, and a ``Keyring`` that holds the new key and the old ones opens every secret while the
re-wrapping runs (no downtime).

Every failure to open (a flipped bit anywhere, the wrong master key, the wrong secret) is a
``SecretCorrupt``: AES-GCM authenticates, so nothing is ever returned that was not sealed.

Master keys are 32 random bytes, written as base64 text (``generate``). ``load_keyring`` reads
them from a file whose lines are ``<key id>:<base64 key>``, newest first; the embedded default
creates that file with owner-only permissions on first start. A missing, unreadable, malformed
or too-open file is a ``ConfigError`` that says which, never a fallback to plaintext.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pilothouse.errors import ConfigError, PilothouseError

KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID_MAX = 40


class SecretCorrupt(PilothouseError):
    """A sealed secret does not open: altered, or sealed under a master key not held."""

    status = 500
    code = "secret_corrupt"


@dataclass(frozen=True)
class Sealed:
    """A secret value as stored: its ciphertext and its wrapped data key."""

    key_id: str  # the master key that wraps the data key
    wrapped_key: bytes  # nonce + AES-GCM(master, data key)
    ciphertext: bytes  # nonce + AES-GCM(data key, value)


@dataclass(frozen=True)
class MasterKey:
    """A master key and its id."""

    id: str
    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ConfigError(f"master key {self.id!r} must be {KEY_BYTES} bytes")
        if not self.id or len(self.id) > KEY_ID_MAX or ":" in self.id:
            raise ConfigError(
                f"master key id {self.id!r} must be 1 to {KEY_ID_MAX} characters, no ':'"
            )

    def __repr__(self) -> str:
        return f"MasterKey(id={self.id!r}, key=<hidden>)"


class Keyring:
    """The master keys held: the first seals, every one opens."""

    def __init__(self, keys: list[MasterKey]) -> None:
        if not keys:
            raise ConfigError("no master key: secrets cannot be sealed or opened")
        ids = [k.id for k in keys]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"master key ids are used twice: {ids}")
        self.current = keys[0]
        self._by_id = {k.id: k for k in keys}

    @property
    def ids(self) -> frozenset[str]:
        """The ids of the keys held."""
        return frozenset(self._by_id)

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` derived from the current master key (HKDF-SHA256):
        the same on every replica that holds it, and no use for anything else."""
        return _derived(self.current.key, purpose)

    def derive_all(self, purpose: str) -> list[bytes]:
        """``derive`` from every held key, the current one's first: what checks a value made
        by a replica whose current key is another (during a rotation)."""
        others = [k.key for k in self._by_id.values() if k.id != self.current.id]
        return [_derived(key, purpose) for key in [self.current.key, *others]]

    def seal(self, value: bytes, context: str) -> Sealed:
        """Encrypt ``value`` for the secret named by ``context`` under a fresh data key."""
        return self.seal_with(self.current.id, value, context)

    def seal_with(self, key_id: str, value: bytes, context: str) -> Sealed:
        """``seal`` under the held key ``key_id`` rather than the current one."""
        master = self._by_id[key_id]
        data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        ciphertext = _encrypt(data_key, value, context.encode())
        wrapped = _encrypt(master.key, data_key, _wrap_context(master.id, context))
        return Sealed(master.id, wrapped, ciphertext)

    def open(self, sealed: Sealed, context: str) -> bytes:
        """The value ``sealed`` holds (raises SecretCorrupt if it does not open as ``context``)."""
        data_key = self._data_key(sealed, context)
        return _decrypt(data_key, sealed.ciphertext, context.encode())

    def rewrap(self, sealed: Sealed, context: str) -> Sealed:
        """``sealed`` with its data key wrapped by the current master key (the value itself is
        neither decrypted nor re-encrypted)."""
        if sealed.key_id == self.current.id:
            return sealed
        data_key = self._data_key(sealed, context)
        wrapped = _encrypt(self.current.key, data_key, _wrap_context(self.current.id, context))
        return Sealed(self.current.id, wrapped, sealed.ciphertext)

    def _data_key(self, sealed: Sealed, context: str) -> bytes:
        master = self._by_id.get(sealed.key_id)
        if master is None:
            raise SecretCorrupt(
                f"the secret is sealed under master key {sealed.key_id!r}, which is not held"
            )
        return _decrypt(master.key, sealed.wrapped_key, _wrap_context(master.id, context))


def _wrap_context(key_id: str, context: str) -> bytes:
    return f"pilothouse-data-key\x00{key_id}\x00{context}".encode()


def _encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _decrypt(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + 16:
        raise SecretCorrupt("the sealed value is too short to have been sealed here")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise SecretCorrupt(
            "the sealed value does not open: it was altered, or sealed under another key"
        ) from None


def generate(key_id: str) -> str:
    """A new master key as a keyring file line: ``<id>:<base64 of 32 random bytes>``."""
    MasterKey(key_id, bytes(KEY_BYTES))  # the id's checks
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


def load_keyring(path: Path, *, create: bool = False) -> Keyring:
    """The keyring in ``path`` (see the module); with ``create``, a missing file is made with
    one new key, readable by its owner only."""
    if not path.exists():
        if not create:
            raise ConfigError(f"the master key file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(generate("k1") + "\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"the master key file {path} is readable by others (mode {mode:o}); chmod 600 it"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the master key file {path} cannot be read: {exc}") from exc
    return parse_keyring(text, str(path))


def parse_keyring(text: str, where: str) -> Keyring:
    """A keyring from ``<id>:<base64>`` entries, one per line or comma-separated, newest
    first (``where`` names the source in errors; the keys never appear in them)."""
    keys = []
    for number, line in enumerate(text.replace(",", "\n").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key_id, sep, encoded = line.strip().partition(":")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not sep or len(key) != KEY_BYTES:
            raise ConfigError(
                f"{where}:{number}: not a master key (expected <id>:<base64 of {KEY_BYTES} bytes>)"
            )
        keys.append(MasterKey(key_id, key))
    return Keyring(keys)


def _derived(master: bytes, purpose: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
    return hkdf.derive(master)
