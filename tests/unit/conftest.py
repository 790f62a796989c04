"""Fixtures shared by the unit tests: keys are expensive to generate, so one of each per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from addon.protocol import tokens
from addon.protocol.sealing import Sealer

from .support import Clock, JsonServer, ec_key, json_server, rsa_key

SECRET = "test-secret-key-0123456789abcdefghijklmnop"


@pytest.fixture(scope="session")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="session")
def rsa_private_2() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="session")
def ec_private() -> ec.EllipticCurvePrivateKey:
    return ec_key()


@pytest.fixture
def server() -> Iterator[JsonServer]:
    with json_server() as s:
        yield s


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(SECRET)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(tokens, "time", fake)
    return fake
