"""The YAML configuration: the example parses, and every mistake is explained with key, value and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from addon.config import ConfigError, Settings, load_settings, parse_settings

CONFIG = Path(__file__).resolve().parents[2] / "config"
EXAMPLE = CONFIG / "dev-idp.yaml"
SECRET = "s3cr3t-value-that-is-long-enough-1234567890"


def minimal(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"public_url": "https://mcp.example.com", "issuer": "https://idp.example.com"}
    raw.update(overrides)
    return raw


def error_for(raw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, "proxy.yaml")
    message = str(info.value)
    assert message.startswith("proxy.yaml: "), message
    return message


# --- what parses ------------------------------------------------------------------------------


def test_documented_example_parses() -> None:
    settings = load_settings(EXAMPLE)
    assert isinstance(settings, Settings)
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.mcp_path == "/mcp"
    assert settings.mode == "facade"
    assert settings.issuer == "http://127.0.0.1:9000"
    assert settings.scopes == ("mcp:tools",)
    assert settings.audience == ("http://127.0.0.1:8000/mcp",)
    assert settings.registration.mode == "forward"
    assert settings.registration.client_id is None
    assert settings.secret_key is None
    assert settings.source == str(EXAMPLE)
    assert settings.provider == "generic"


def test_keycloak_example_parses() -> None:
    settings = load_settings(CONFIG / "config.yaml")
    assert settings.provider == "keycloak"
    assert settings.issuer == "http://localhost:8080/realms/mcp"
    assert settings.resource == "http://localhost:8000/mcp"
    assert settings.audience == (settings.resource,)
    assert settings.callback_url == "http://localhost:8000/callback"


def test_unknown_provider_is_named() -> None:
    message = error_for(minimal(provider="okta"))
    assert "`provider` is 'okta'" in message
    assert "generic, keycloak" in message


def test_keycloak_issuer_must_name_a_realm() -> None:
    message = error_for(minimal(provider="keycloak", issuer="http://localhost:8080"))
    assert "`issuer` is 'http://localhost:8080'" in message
    assert "http://localhost:8080/realms/mcp" in message


def test_defaults_and_derived_values() -> None:
    settings = parse_settings(minimal())
    assert settings.mcp_path == "/mcp"
    assert settings.mode == "facade"
    assert settings.facade
    assert settings.scopes == ()
    assert settings.resource == "https://mcp.example.com/mcp"
    assert settings.audience == ("https://mcp.example.com/mcp",)
    assert settings.resource_metadata_url == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    assert settings.callback_url == "https://mcp.example.com/callback"
    assert settings.registration.mode == "forward"
    assert settings.clock_skew_seconds == 30
    assert settings.mcp_server_timeout_seconds == 120
    assert settings.max_request_body_bytes == 4 * 1024 * 1024
    assert settings.secret_key is None


def test_audience_default_follows_public_url_and_mcp_path() -> None:
    settings = parse_settings(minimal(public_url="http://127.0.0.1:9999", mcp_path="/api/mcp"))
    assert settings.audience == ("http://127.0.0.1:9999/api/mcp",)


def test_explicit_audience_and_single_string_scope() -> None:
    settings = parse_settings(minimal(audience=["api://mcp", "https://mcp.example.com/mcp"], scopes="mcp:tools"))
    assert settings.audience == ("api://mcp", "https://mcp.example.com/mcp")
    assert settings.scopes == ("mcp:tools",)


def test_resource_server_mode() -> None:
    settings = parse_settings(minimal(mode="resource-server"))
    assert settings.mode == "resource-server"
    assert not settings.facade


def test_static_registration() -> None:
    settings = parse_settings(minimal(registration={"mode": "static", "client_id": "abc", "client_secret": SECRET}))
    assert settings.registration.mode == "static"
    assert settings.registration.client_id == "abc"
    assert settings.registration.client_secret == SECRET
    assert settings.registration.client_auth_method == "client_secret_basic"
    public = parse_settings(minimal(registration={"mode": "static", "client_id": "abc"}))
    assert public.registration.client_auth_method == "none"


def test_secrets_are_not_in_the_repr() -> None:
    settings = parse_settings(
        minimal(
            secret_key=SECRET,
            previous_secret_keys=[SECRET + "-old"],
            registration={"mode": "static", "client_id": "abc", "client_secret": "client-secret-value"},
        )
    )
    assert SECRET not in repr(settings)
    assert "client-secret-value" not in repr(settings)


def test_env_expansion_for_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_AUTH_KEY", SECRET)
    monkeypatch.setenv("IDP_CLIENT_SECRET", "from-the-environment")
    settings = parse_settings(
        minimal(
            secret_key="${MCP_AUTH_KEY}",
            registration={"mode": "static", "client_id": "abc", "client_secret": "${IDP_CLIENT_SECRET}"},
        )
    )
    assert settings.secret_key == SECRET
    assert settings.registration.client_secret == "from-the-environment"


def test_env_expansion_inside_a_longer_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDP_HOST", "idp.internal:8443")
    assert parse_settings(minimal(issuer="https://${IDP_HOST}/realms/r")).issuer == "https://idp.internal:8443/realms/r"


def test_unset_env_var_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    message = error_for(minimal(secret_key="${NOT_SET_ANYWHERE}"))
    assert "`secret_key`" in message
    assert "NOT_SET_ANYWHERE" in message
    assert "export NOT_SET_ANYWHERE=" in message
    message = error_for(
        minimal(registration={"mode": "static", "client_id": "a", "client_secret": "${NOT_SET_ANYWHERE}"})
    )
    assert "registration.client_secret" in message and "NOT_SET_ANYWHERE" in message


def test_env_var_set_but_empty_is_used_not_reported_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMPTY_KEY", "")
    message = error_for(minimal(secret_key="${EMPTY_KEY}"))
    assert "not set" not in message
    assert "32" in message  # too short, like any other short key


# --- mistakes, each named with key, value and fix ---------------------------------------------


def test_trailing_slash_in_public_url() -> None:
    message = error_for(minimal(public_url="https://mcp.example.com/"))
    assert "`public_url`" in message
    assert "'https://mcp.example.com/'" in message
    assert "without the trailing slash: https://mcp.example.com" in message


@pytest.mark.parametrize("issuer", ["idp.example.com", "not a url", "ftp://idp.example.com", "https://", 42, ""])
def test_issuer_that_is_not_a_url(issuer: Any) -> None:
    message = error_for(minimal(issuer=issuer))
    assert "`issuer`" in message
    assert repr(issuer) in message
    assert "absolute http(s) URL" in message


@pytest.mark.parametrize(
    "url", ["https://mcp.example.com?x=1", "https://mcp.example.com#top", "https://mcp.example.com:99999"]
)
def test_public_url_with_query_fragment_or_bad_port(url: str) -> None:
    message = error_for(minimal(public_url=url))
    assert "`public_url`" in message and repr(url) in message


def test_bad_mode() -> None:
    message = error_for(minimal(mode="proxy"))
    assert "`mode`" in message
    assert "'proxy'" in message
    assert "facade" in message and "resource-server" in message


def test_bad_registration_mode() -> None:
    message = error_for(minimal(registration={"mode": "dynamic"}))
    assert "`registration.mode`" in message and "'dynamic'" in message and "forward" in message and "static" in message


@pytest.mark.parametrize(
    ("raw", "unknown", "suggestion"),
    [
        (minimal(scope=["mcp:tools"]), "scope", "scopes"),
        (minimal(audiences=["x"]), "audiences", "audience"),
        (minimal(public_uri="https://x"), "public_uri", "public_url"),
        (minimal(registration={"client_secrt": "x"}), "registration.client_secrt", "registration.client_secret"),
        (minimal(registration={"mod": "static"}), "registration.mod", "registration.mode"),
    ],
)
def test_unknown_key_with_did_you_mean(raw: dict[str, Any], unknown: str, suggestion: str) -> None:
    message = error_for(raw)
    assert f"unknown key `{unknown}`" in message
    assert f"did you mean `{suggestion}`?" in message


def test_unknown_key_without_a_close_match_lists_the_known_ones() -> None:
    message = error_for(minimal(zzzzzz=1))
    assert "unknown key `zzzzzz`" in message
    assert "public_url" in message and "issuer" in message


def test_static_registration_without_client_id() -> None:
    message = error_for(minimal(registration={"mode": "static"}))
    assert "`registration.client_id`" in message
    assert "None" in message
    assert "https://mcp.example.com/callback" in message  # what to register at the IdP


def test_static_registration_with_secret_method_but_no_secret() -> None:
    message = error_for(
        minimal(registration={"mode": "static", "client_id": "a", "client_auth_method": "client_secret_post"})
    )
    assert "`registration.client_auth_method`" in message and "client_secret" in message


@pytest.mark.parametrize("key", ["client_id", "client_secret"])
def test_client_credentials_with_forward_mode(key: str) -> None:
    message = error_for(minimal(registration={"mode": "forward", key: "some-value"}))
    assert f"registration.{key}" in message
    assert "registration.mode: static" in message
    if key == "client_secret":
        assert "some-value" not in message


@pytest.mark.parametrize("secret", ["short", "x" * 31, ""])
def test_short_secret_key_is_refused_without_printing_it(secret: str) -> None:
    message = error_for(minimal(secret_key=secret))
    assert "`secret_key`" in message
    assert f"({len(secret)} characters)" in message
    assert "at least 32 characters" in message
    assert "secrets.token_urlsafe" in message
    if secret:
        assert secret not in message


def test_short_secret_from_the_environment_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_AUTH_KEY", "hunter2-hunter2")
    message = error_for(minimal(secret_key="${MCP_AUTH_KEY}"))
    assert "hunter2" not in message
    assert "`secret_key`" in message


@pytest.mark.parametrize("secret", [12345678901234567890123456789012345, 3.14159265358979])
def test_numeric_secret_key_is_refused_without_printing_it(secret: Any) -> None:
    # YAML reads an unquoted run of digits as a number: refused, and still a secret.
    message = error_for(minimal(secret_key=secret))
    assert "`secret_key`" in message
    assert str(secret) not in message
    assert str(secret)[:8] not in message


def test_short_previous_secret_key_is_refused_without_printing_it() -> None:
    message = error_for(minimal(secret_key=SECRET, previous_secret_keys=["old-short-key"]))
    assert "previous_secret_keys[0]" in message
    assert "old-short-key" not in message


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (minimal(mcp_path="mcp"), "mcp_path"),
        (minimal(mcp_path="/mcp/"), "mcp_path"),
        (minimal(mcp_path="/"), "mcp_path"),
        (minimal(mcp_path="/mcp?x"), "mcp_path"),
        (minimal(scopes=["mcp tools"]), "scopes"),
        (minimal(scopes=['mcp"tools']), "scopes"),
        (minimal(scopes=[""]), "scopes"),
        (minimal(scopes=[1]), "scopes"),
        (minimal(clock_skew_seconds=-1), "clock_skew_seconds"),
        (minimal(clock_skew_seconds="30"), "clock_skew_seconds"),
        (minimal(clock_skew_seconds=True), "clock_skew_seconds"),
        (minimal(jwks_refetch_interval_seconds=0), "jwks_refetch_interval_seconds"),
        (minimal(idp_timeout_seconds=1000), "idp_timeout_seconds"),
        (minimal(mcp_server_timeout_seconds=0), "mcp_server_timeout_seconds"),
        (minimal(mcp_server_timeout_seconds="2m"), "mcp_server_timeout_seconds"),
        (minimal(max_request_body_bytes=10), "max_request_body_bytes"),
        (minimal(sse_message_path="messages"), "sse_message_path"),
        (minimal(sse_message_path="/messages?x"), "sse_message_path"),
        (minimal(sse_message_path="/token"), "sse_message_path"),
        (minimal(sse_message_path="/.well-known/x"), "sse_message_path"),
        (minimal(sse_message_path="/mcp/messages/"), "sse_message_path"),
        (minimal(max_request_body_bytes="4MB"), "max_request_body_bytes"),
        (minimal(resource_name=["x"]), "resource_name"),
        (minimal(registration="static"), "registration"),
    ],
)
def test_other_bad_values_name_their_key(raw: dict[str, Any], key: str) -> None:
    assert f"`{key}`" in error_for(raw)


def test_sse_message_path_keeps_its_trailing_slash() -> None:
    assert parse_settings(minimal(sse_message_path="/messages/")).sse_message_path == "/messages/"
    assert parse_settings(minimal()).sse_message_path is None


def test_empty_audience_is_refused() -> None:
    assert "`audience`" in error_for(minimal(audience=[]))


@pytest.mark.parametrize("missing", ["public_url", "issuer"])
def test_required_keys(missing: str) -> None:
    raw = minimal()
    del raw[missing]
    message = error_for(raw)
    assert f"`{missing}` is required" in message
    assert "config/config.yaml" in message


@pytest.mark.parametrize("raw", [[], "public_url: x", 42])
def test_file_that_is_not_a_mapping(raw: Any) -> None:
    assert "YAML mapping" in error_for(raw)


# --- files ------------------------------------------------------------------------------------


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("public_url: [http://127.0.0.1:8000\nissuer: x\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert "not valid YAML" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message
    assert "no such file" in message
    assert "mcp_auth_config" in message


def test_empty_file_asks_for_the_required_keys(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match="`public_url` is required"):
        load_settings(path)


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path)


def test_file_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_AUTH_KEY", SECRET)
    path = tmp_path / "proxy.yaml"
    path.write_text(
        "public_url: https://mcp.example.com\n"
        "issuer: https://idp.example.com/realms/r1\n"
        "mode: resource-server\n"
        "scopes: [mcp:tools, mcp:read]\n"
        "secret_key: ${MCP_AUTH_KEY}\n"
    )
    settings = load_settings(path)
    assert settings.source == str(path)
    assert settings.scopes == ("mcp:tools", "mcp:read")
    assert settings.secret_key == SECRET
