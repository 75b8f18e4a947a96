"""Envelope encryption: values open only as themselves, under a held key, unaltered; rotation
keeps every secret readable; the master key file is made owner-only and refused when it is
missing, malformed or readable by others."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pilothouse.errors import ConfigError
from pilothouse.secrets.crypto import (
    Keyring,
    MasterKey,
    Sealed,
    SecretCorrupt,
    generate,
    load_keyring,
)

VALUE = b"sk-canary-5f1c0e9a"


def _key(key_id: str, byte: int) -> MasterKey:
    return MasterKey(key_id, bytes([byte]) * 32)


def test_a_sealed_value_opens_as_itself_and_shows_nothing_of_it() -> None:
    ring = Keyring([_key("k1", 1)])
    sealed = ring.seal(VALUE, "org_1/github-token")
    assert VALUE not in sealed.ciphertext + sealed.wrapped_key
    assert ring.open(sealed, "org_1/github-token") == VALUE
    assert ring.seal(VALUE, "org_1/github-token").ciphertext != sealed.ciphertext  # fresh keys


@pytest.mark.parametrize("part", ["ciphertext", "wrapped_key"])
@pytest.mark.parametrize("at", [0, 12, -1])
def test_any_flipped_bit_fails_loudly(part: str, at: int) -> None:
    ring = Keyring([_key("k1", 1)])
    sealed = ring.seal(VALUE, "s")
    data = bytearray(getattr(sealed, part))
    data[at] ^= 0x01
    tampered = Sealed(**{**sealed.__dict__, part: bytes(data)})
    with pytest.raises(SecretCorrupt, match="altered"):
        ring.open(tampered, "s")


def test_a_value_moved_to_another_secret_or_opened_with_another_key_does_not_open() -> None:
    ring = Keyring([_key("k1", 1)])
    sealed = ring.seal(VALUE, "org_1/a")
    with pytest.raises(SecretCorrupt):
        ring.open(sealed, "org_1/b")
    with pytest.raises(SecretCorrupt, match="altered, or sealed under another key"):
        Keyring([_key("k1", 2)]).open(sealed, "org_1/a")  # the wrong master key, same id
    with pytest.raises(SecretCorrupt, match="not held"):
        Keyring([_key("k2", 1)]).open(sealed, "org_1/a")


def test_rotation_rewraps_without_touching_the_value_and_keeps_every_secret_readable() -> None:
    old = Keyring([_key("k1", 1)])
    sealed = {name: old.seal(VALUE + name.encode(), name) for name in ("a", "b", "c")}
    both = Keyring([_key("k2", 2), _key("k1", 1)])  # new first: it seals; both open
    half = {n: both.rewrap(s, n) if n != "c" else s for n, s in sealed.items()}
    assert {n: both.open(s, n) for n, s in half.items()} == {n: VALUE + n.encode() for n in sealed}
    assert half["a"].key_id == "k2" and half["a"].ciphertext == sealed["a"].ciphertext
    new_only = Keyring([_key("k2", 2)])
    assert new_only.open(half["a"], "a") == VALUE + b"a"
    with pytest.raises(SecretCorrupt, match="not held"):
        new_only.open(half["c"], "c")  # not yet re-wrapped


def test_the_key_file_is_made_owner_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "data" / "master.key"
    ring = load_keyring(path, create=True)
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = load_keyring(path)
    assert again.open(ring.seal(VALUE, "s"), "s") == VALUE


@pytest.mark.parametrize(
    ("text", "mode", "words"),
    [
        (None, 0o600, "does not exist"),
        ("k1:not-base64!\n", 0o600, ":1: not a master key"),
        ("# only a comment\n", 0o600, "no master key"),
        ("k1:" + "QUJD" + "\n", 0o600, "not a master key"),
        ("GOOD\n", 0o644, "readable by others"),
        ("GOOD\nGOOD\n", 0o600, "used twice"),
    ],
)
def test_a_missing_or_bad_key_file_is_a_clear_start_up_error(
    tmp_path: Path, text: str | None, mode: int, words: str
) -> None:
    path = tmp_path / "master.key"
    if text is not None:
        path.write_text(text.replace("GOOD", generate("k1")))
        path.chmod(mode)
    with pytest.raises(ConfigError, match=words):
        load_keyring(path)


def test_a_master_key_never_shows_its_bytes() -> None:
    key = _key("k1", 7)
    assert "\\x07" not in repr(key) and "hidden" in repr(key)
