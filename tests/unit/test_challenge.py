"""WWW-Authenticate challenges, checked as strings and as the official MCP Python SDK reads them."""

from __future__ import annotations

import json
import re

import httpx2
import pytest
from mcp.client.auth.utils import (
    extract_field_from_www_auth,
    extract_resource_metadata_from_www_auth,
    extract_scope_from_www_auth,
)

from addon.protocol.challenge import Challenge, insufficient_scope, invalid_request, invalid_token, missing_token

PRM = "https://proxy.example.com/.well-known/oauth-protected-resource/mcp"

# RFC 6750 §3 / RFC 7235: one Bearer challenge of auth-params whose quoted values hold only
# %x20-21 / %x23-5B / %x5D-7E (printable ASCII without `"` and `\`).
_PARAM = r'[a-z_]+="[\x20\x21\x23-\x5b\x5d-\x7e]*"'
RFC6750_CHALLENGE = re.compile(rf"^Bearer {_PARAM}(, {_PARAM})*$")


def as_sdk_sees_it(answer: Challenge) -> httpx2.Response:
    return httpx2.Response(answer.status, headers={"WWW-Authenticate": answer.www_authenticate}, content=answer.body())


def params(header: str) -> dict[str, str]:
    assert RFC6750_CHALLENGE.match(header), header
    return dict(re.findall(r'([a-z_]+)="([^"]*)"', header))


def test_missing_token() -> None:
    answer = missing_token(PRM, ["mcp:tools"])
    assert answer.status == 401
    assert answer.www_authenticate == f'Bearer resource_metadata="{PRM}", scope="mcp:tools"'
    body = json.loads(answer.body())
    assert body["error"] == "invalid_token"
    assert body["error_description"]


def test_missing_token_with_several_scopes_and_with_none() -> None:
    assert missing_token(PRM, ["mcp:tools", "mcp:read"]).www_authenticate == (
        f'Bearer resource_metadata="{PRM}", scope="mcp:tools mcp:read"'
    )
    assert missing_token(PRM, []).www_authenticate == f'Bearer resource_metadata="{PRM}"'


def test_missing_token_has_no_error_attribute() -> None:
    # RFC 6750 §3.1: a request without credentials gets no error code.
    assert "error" not in params(missing_token(PRM, ["mcp:tools"]).www_authenticate)


def test_invalid_token() -> None:
    answer = invalid_token(PRM, ["mcp:tools"], "token expired 12 s ago")
    assert answer.status == 401
    assert params(answer.www_authenticate) == {
        "error": "invalid_token",
        "error_description": "token expired 12 s ago",
        "resource_metadata": PRM,
        "scope": "mcp:tools",
    }
    assert answer.www_authenticate == (
        f'Bearer error="invalid_token", resource_metadata="{PRM}", scope="mcp:tools", '
        'error_description="token expired 12 s ago"'
    )
    assert json.loads(answer.body()) == {"error": "invalid_token", "error_description": "token expired 12 s ago"}


def test_insufficient_scope_names_every_scope_needed() -> None:
    answer = insufficient_scope(PRM, ["mcp:tools", "mcp:admin"], ["mcp:admin"])
    assert answer.status == 403
    fields = params(answer.www_authenticate)
    assert fields["error"] == "insufficient_scope"
    assert fields["scope"] == "mcp:tools mcp:admin"
    assert fields["resource_metadata"] == PRM
    assert "mcp:admin" in fields["error_description"]
    assert json.loads(answer.body())["error"] == "insufficient_scope"


def test_invalid_request() -> None:
    answer = invalid_request(PRM, "more than one Authorization header")
    assert answer.status == 400
    assert params(answer.www_authenticate) == {
        "error": "invalid_request",
        "error_description": "more than one Authorization header",
        "resource_metadata": PRM,
    }


@pytest.mark.parametrize(
    "description",
    [
        "signing key 'a\"b' is not in the JWKS",
        "back\\slash",
        'both " and \\',
        "naïve — ünïcödé ✓ 漢字",
        "line\nbreak\r\ttab",
        "nul\x00del\x7f",
        '"',
        "",
    ],
)
def test_description_is_sanitized_into_a_valid_quoted_string(description: str) -> None:
    answer = invalid_token(PRM, ["mcp:tools"], description)
    fields = params(answer.www_authenticate)  # asserts the RFC 6750 grammar
    assert len(fields["error_description"]) == len(description)
    assert fields["resource_metadata"] == PRM
    assert fields["scope"] == "mcp:tools"
    answer.www_authenticate.encode("ascii")  # a header value an HTTP/1.1 stack sends as is


def test_printable_description_is_kept_verbatim() -> None:
    text = "token audience ['https://x/mcp'] is not this resource (https://proxy.example.com/mcp); {ok} 100% <fine>"
    assert params(invalid_token(PRM, [], text).www_authenticate)["error_description"] == text


# --- as the official MCP Python SDK reads them ------------------------------------------------


def test_sdk_reads_the_missing_token_challenge() -> None:
    response = as_sdk_sees_it(missing_token(PRM, ["mcp:tools", "mcp:read"]))
    assert extract_resource_metadata_from_www_auth(response) == PRM
    assert extract_scope_from_www_auth(response) == "mcp:tools mcp:read"
    assert extract_field_from_www_auth(response, "error") is None


def test_sdk_reads_the_invalid_token_challenge() -> None:
    response = as_sdk_sees_it(invalid_token(PRM, ["mcp:tools"], 'kid "x\\y" unknown'))
    assert extract_resource_metadata_from_www_auth(response) == PRM
    assert extract_scope_from_www_auth(response) == "mcp:tools"
    assert extract_field_from_www_auth(response, "error") == "invalid_token"
    assert extract_field_from_www_auth(response, "error_description") == "kid 'x'y' unknown"


def test_sdk_recognises_step_up() -> None:
    # The SDK re-authorizes on 403 only when it reads error="insufficient_scope", then asks for `scope`.
    response = as_sdk_sees_it(insufficient_scope(PRM, ["mcp:tools", "mcp:admin"], ["mcp:admin"]))
    assert response.status_code == 403
    assert extract_field_from_www_auth(response, "error") == "insufficient_scope"
    assert extract_scope_from_www_auth(response) == "mcp:tools mcp:admin"
    assert extract_resource_metadata_from_www_auth(response) == PRM


@pytest.mark.parametrize(
    "description",
    [
        "signing key 'resource_metadata=https://evil.example/prm' is not in the JWKS",
        "signing key 'resource_metadata=\"https://evil.example/prm\"' is not in the JWKS",
        "token issuer 'x scope=admin:all' is not 'https://idp.example.com'",
        "token issuer 'x scope=\"admin:all\"' is not 'https://idp.example.com'",
    ],
)
def test_description_that_looks_like_a_parameter_does_not_mislead_the_sdk(description: str) -> None:
    # Token-derived text (kid, iss, aud) ends up in error_description; the SDK matches the first
    # `name=value` anywhere in the header, so the real parameters must come before the description.
    response = as_sdk_sees_it(invalid_token(PRM, ["mcp:tools"], description))
    assert extract_resource_metadata_from_www_auth(response) == PRM
    assert extract_scope_from_www_auth(response) == "mcp:tools"
    assert extract_field_from_www_auth(response, "error") == "invalid_token"
    response = as_sdk_sees_it(invalid_request(PRM, description))
    assert extract_field_from_www_auth(response, "resource_metadata") == PRM  # the SDK's helper skips 400s
