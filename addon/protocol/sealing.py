"""Sealed values: how a stateless proxy remembers registrations, state and codes.

A sealed value is JSON encrypted and authenticated with AES-256-GCM under a key derived
from the configured secret. The purpose is bound in as associated data, so a sealed
client id can never be replayed as a sealed state (or the other way round). Several
proxy processes sharing the secret read each other's values: that is the whole of the
scale-out story, no registration store.

Layout (then base64url without padding): version(1) | key id(4) | nonce(12) | ciphertext.
The key id lets a rotated-out key keep opening old values during a grace period.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = 1
_HEADER = 1 + 4 + 12


class SealError(ValueError):
    """A value that was not sealed by this proxy's keys, was tampered with, or has expired."""


def _derive(secret: str) -> tuple[bytes, AESGCM]:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"mcp-auth-addon", info=b"sealing v1").derive(secret.encode())
    key_id = hashlib.sha256(b"key id" + key).digest()[:4]
    return key_id, AESGCM(key)


def generate_secret() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


class Sealer:
    """Seals with the first secret, opens with any of them (the rest are rotated-out keys)."""

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        self._current = _derive(secret)
        self._keys = dict([self._current, *(_derive(s) for s in previous)])

    def seal(self, purpose: str, payload: dict[str, Any], ttl: float | None = None) -> str:
        document = dict(payload)
        if ttl is not None:
            document["exp"] = int(time.time() + ttl)
        plaintext = json.dumps(document, separators=(",", ":")).encode()
        key_id, aead = self._current
        nonce = os.urandom(12)
        blob = bytes([_VERSION]) + key_id + nonce + aead.encrypt(nonce, plaintext, purpose.encode())
        return base64.urlsafe_b64encode(blob).decode().rstrip("=")

    def open(self, purpose: str, sealed: str) -> dict[str, Any]:
        try:
            blob = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        except (ValueError, TypeError) as e:
            raise SealError("not a value this proxy issued (not base64url)") from e
        if len(blob) <= _HEADER or blob[0] != _VERSION:
            raise SealError("not a value this proxy issued (wrong format)")
        aead = self._keys.get(blob[1:5])
        if aead is None:
            raise SealError("sealed with a key this proxy does not hold")
        try:
            plaintext = aead.decrypt(blob[5:17], blob[17:], purpose.encode())
        except InvalidTag as e:
            raise SealError("tampered with, or sealed for another purpose") from e
        document = json.loads(plaintext)
        if not isinstance(document, dict):
            raise SealError("not a value this proxy issued (payload)")
        exp = document.get("exp")
        if isinstance(exp, int) and exp < time.time():
            raise SealError(f"expired {int(time.time() - exp)} s ago")
        return document
