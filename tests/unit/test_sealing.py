"""Sealed values: the proxy's only memory. Anything it did not seal, for this purpose, in time, must not open."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from addon.protocol import sealing
from addon.protocol.sealing import Sealer, SealError, generate_secret

OLD = "old-secret-0123456789abcdefghijklmnopqrstuv"
NEW = "new-secret-0123456789abcdefghijklmnopqrstuv"
PAYLOAD: dict[str, Any] = {"u": "upstream-client", "r": ["http://127.0.0.1:3000/cb"], "n": "Ünïcode ✓", "x": None}


class FrozenTime:
    """Stands in for the `time` module inside sealing.py."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_round_trip(sealer: Sealer) -> None:
    assert sealer.open("registration", sealer.seal("registration", PAYLOAD)) == PAYLOAD


def test_sealed_value_is_url_safe_and_hides_the_payload(sealer: Sealer) -> None:
    sealed = sealer.seal("registration", PAYLOAD)
    assert set(sealed) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert "upstream-client" not in sealed
    assert b"upstream-client" not in base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))


def test_same_payload_seals_differently_each_time(sealer: Sealer) -> None:
    assert sealer.seal("state", PAYLOAD) != sealer.seal("state", PAYLOAD)


def test_another_process_with_the_same_secret_opens_it() -> None:
    sealed = Sealer(NEW).seal("state", PAYLOAD)
    assert Sealer(NEW).open("state", sealed) == PAYLOAD


def test_purpose_is_bound(sealer: Sealer) -> None:
    sealed = sealer.seal("registration", PAYLOAD)
    with pytest.raises(SealError):
        sealer.open("state", sealed)
    with pytest.raises(SealError):
        sealer.open("code", sealed)


def test_another_secret_cannot_open(sealer: Sealer) -> None:
    with pytest.raises(SealError):
        Sealer(NEW).open("registration", sealer.seal("registration", PAYLOAD))


def test_tampering_with_any_byte_fails(sealer: Sealer) -> None:
    sealed = sealer.seal("code", {"k": "idp-code"})
    blob = bytearray(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4)))
    for i in range(len(blob)):
        for flip in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[i] ^= flip
            text = base64.urlsafe_b64encode(bytes(tampered)).decode().rstrip("=")
            with pytest.raises(SealError):
                sealer.open("code", text)


def test_truncated_or_extended_values_fail(sealer: Sealer) -> None:
    sealed = sealer.seal("code", {"k": "idp-code"})
    for cut in range(1, len(sealed)):
        with pytest.raises(SealError):
            sealer.open("code", sealed[:cut])
    with pytest.raises(SealError):
        sealer.open("code", sealed + "AAAA")


def test_expired_value_fails_with_age_in_message(sealer: Sealer) -> None:
    sealed = sealer.seal("state", PAYLOAD, ttl=-5)
    with pytest.raises(SealError, match=r"expired \d+ s ago"):
        sealer.open("state", sealed)


def test_ttl_is_honoured_until_it_runs_out(sealer: Sealer, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FrozenTime(time.time())
    monkeypatch.setattr(sealing, "time", clock)
    sealed = sealer.seal("state", PAYLOAD, ttl=600)
    clock.now += 599
    assert sealer.open("state", sealed)["u"] == "upstream-client"
    clock.now += 2
    with pytest.raises(SealError, match="expired"):
        sealer.open("state", sealed)


def test_without_ttl_the_value_does_not_expire(sealer: Sealer, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FrozenTime(time.time())
    monkeypatch.setattr(sealing, "time", clock)
    sealed = sealer.seal("registration", PAYLOAD)
    clock.now += 10 * 365 * 24 * 3600
    assert sealer.open("registration", sealed) == PAYLOAD


def test_rotated_key_still_opens_old_values_and_seals_with_the_new() -> None:
    old_value = Sealer(OLD).seal("registration", PAYLOAD)
    rotated = Sealer(NEW, previous=[OLD])
    assert rotated.open("registration", old_value) == PAYLOAD
    new_value = rotated.seal("registration", PAYLOAD)
    assert Sealer(NEW).open("registration", new_value) == PAYLOAD
    with pytest.raises(SealError):
        Sealer(OLD).open("registration", new_value)


def test_dropped_key_no_longer_opens_old_values() -> None:
    old_value = Sealer(OLD).seal("registration", PAYLOAD)
    with pytest.raises(SealError, match="key"):
        Sealer(NEW).open("registration", old_value)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "A",
        "AA",
        "AAAA",
        "not base64 at all!",
        "%%%%",
        "====",
        "é€漢字",
        "\x00\x01",
        "A" * 22,  # shorter than the header
        "A" * 24,  # exactly the header, no ciphertext
        "A" * 200,
        base64.urlsafe_b64encode(b"\x02" + b"\x00" * 60).decode(),  # unknown version
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",  # a JWT, not a sealed value
    ],
)
def test_garbage_raises_seal_error_only(sealer: Sealer, garbage: str) -> None:
    with pytest.raises(SealError):
        sealer.open("registration", garbage)


def test_generated_secrets_are_long_and_distinct() -> None:
    secrets = {generate_secret() for _ in range(20)}
    assert len(secrets) == 20
    assert all(len(s) >= 43 for s in secrets)
    first, second = secrets.pop(), secrets.pop()
    with pytest.raises(SealError):
        Sealer(first).open("x", Sealer(second).seal("x", {}))
