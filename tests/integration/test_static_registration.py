"""Static registration: one pre-registered upstream client, a registration per MCP client, and consent."""

from __future__ import annotations

import httpx
import pytest
import stack
from mcp_client import parse_forms
from mcp_session import oauth_client, text_of
from oauth_steps import REDIRECT_URI, Pkce, authorization_url, query_of, register

pytestmark = [pytest.mark.integration]


@pytest.mark.anyio
async def test_sdk_client_completes_the_dance_with_consent(static_proxy: stack.Service) -> None:
    since = len(static_proxy.lines)
    async with oauth_client(static_proxy.url + "/mcp") as client:
        result = await client.call_tool("hello-world", {"name": "joe"})
    assert text_of(result).startswith("Hello, joe! Your user agent is: ")
    static_proxy.wait_for_line(r"\[registration\] POST /register 201: synthesized", since=since)
    static_proxy.wait_for_line(r"\[authorization\] GET /authorize 200: asked the user to approve", since=since)
    static_proxy.wait_for_line(r"\[token\] POST /token 200: authorization_code exchanged at the IdP for client "
                               r"mcp-proxy", since=since)


def consent_form(proxy: stack.Service, http: httpx.Client, client_id: str, state: str = "s") -> dict[str, str]:
    url = authorization_url(proxy.url + "/authorize", client_id, Pkce.make(), state, None)
    page = http.get(url)
    assert page.status_code == 200
    assert "oauth-steps test client" in page.text  # the consent page names the client
    assert page.headers["x-frame-options"] == "DENY"
    (form,) = parse_forms(page.text)
    assert {b.value for b in form.buttons} == {"approve", "deny"}
    return {name: value for name, _, value in form.fields}


def test_registration_is_synthesized_for_a_public_client(static_proxy: stack.Service) -> None:
    client = register(static_proxy.url + "/register", token_endpoint_auth_method="client_secret_basic")
    assert client["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in client
    metadata = httpx.get(static_proxy.url + "/.well-known/oauth-authorization-server").json()
    assert metadata["token_endpoint_auth_methods_supported"] == ["none"]


def test_consent_denied_tells_the_client(static_proxy: stack.Service) -> None:
    client = register(static_proxy.url + "/register")
    with httpx.Client() as http:
        fields = consent_form(static_proxy, http, str(client["client_id"]), state="st")
        response = http.post(static_proxy.url + "/authorize/consent", data={**fields, "decision": "deny"})
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI)
    assert query_of(location)["error"] == "access_denied"
    assert query_of(location)["state"] == "st"
    assert query_of(location)["iss"] == static_proxy.url


def test_consent_from_another_browser_is_refused(static_proxy: stack.Service) -> None:
    """A consent form posted without this browser's cookie: the cross-site request consent guards against."""
    client = register(static_proxy.url + "/register")
    with httpx.Client() as http:
        fields = consent_form(static_proxy, http, str(client["client_id"]))
    response = httpx.post(static_proxy.url + "/authorize/consent", data={**fields, "decision": "approve"})
    assert response.status_code == 403
    assert "location" not in response.headers


def test_approval_sends_the_user_to_the_idp_and_is_remembered(static_proxy: stack.Service, idp: stack.Service) -> None:
    client = register(static_proxy.url + "/register")
    client_id = str(client["client_id"])
    with httpx.Client() as http:
        fields = consent_form(static_proxy, http, client_id)
        response = http.post(static_proxy.url + "/authorize/consent", data={**fields, "decision": "approve"})
        assert response.status_code == 302
        upstream = response.headers["location"]
        assert upstream.startswith(idp.url + "/")
        params = query_of(upstream)
        assert params["client_id"] == "mcp-proxy"
        assert params["redirect_uri"] == static_proxy.url + "/callback"
        assert params["resource"] == static_proxy.url + "/mcp"
        # Same browser, same client: no second consent page.
        again = http.get(authorization_url(static_proxy.url + "/authorize", client_id, Pkce.make(), "s", None))
        assert again.status_code == 302
        assert again.headers["location"].startswith(idp.url + "/")
    # Another client in the same browser still needs its own consent.
    other = register(static_proxy.url + "/register")
    with httpx.Client(cookies=http.cookies) as http2:
        consent_form(static_proxy, http2, str(other["client_id"]))
