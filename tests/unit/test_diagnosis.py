"""The diagnosis: classifying flows passively, the dance per client, and every doctor check.

Flows are built with mitmproxy's own test helpers and go through the same adapter
(addon.diagnosis.flows) as a saved .mitm file; the last tests run the doctor and
`mitmdump -nr ... --set mcp_auth_dance=true` on the committed example captures.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http, io
from mitmproxy.proxy import mode_specs
from mitmproxy.test import tflow

from addon.diagnosis import classify as st
from addon.diagnosis.dance import EXPECTED, GROUPING, OK, build_dances, render
from addon.diagnosis.doctor import ERROR, INFO, WARNING, Diagnosis, diagnose, expected_issuer, main, map_public_urls
from addon.diagnosis.exchange import Exchange, parse_www_authenticate, sse_events
from addon.diagnosis.flows import client_url, exchange_from_flow, exchanges_from_flows
from addon.stages import Stage

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
MITMDUMP = str(Path(sys.executable).parent / "mitmdump")

T0 = 1_700_000_000.0
MCP = "https://mcp.example.com/mcp"
ORIGIN = "https://mcp.example.com"
PRM_URL = ORIGIN + "/.well-known/oauth-protected-resource/mcp"
AS = "https://as.example.com"
AS_META = AS + "/.well-known/oauth-authorization-server"
REDIRECT = "http://127.0.0.1:5000/callback"
CHALLENGE = f'Bearer resource_metadata="{PRM_URL}", scope="mcp:tools"'


# --- building flows --------------------------------------------------------------------------


def make(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | str | dict[str, Any] = b"",
    status: int | None = None,
    resp_headers: dict[str, str] | None = None,
    resp_body: bytes | str | dict[str, Any] | None = b"",
    at: float = 0.0,
    wait: float = 0.005,
    took: float = 0.001,
    conn: str = "conn-1",
    addr: str = "10.0.0.7",
    metadata: dict[str, Any] | None = None,
    live: bool = True,
) -> http.HTTPFlow:
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    request = http.Request.make(method, url, body, headers)
    request.timestamp_start = T0 + at
    request.timestamp_end = T0 + at + 0.001
    response = None
    if status is not None:
        resp_headers = dict(resp_headers or {})
        if isinstance(resp_body, dict):
            resp_body = json.dumps(resp_body)
            resp_headers.setdefault("Content-Type", "application/json")
        response = http.Response.make(status, resp_body or b"", resp_headers)
        if resp_body is None:
            response.raw_content = None  # streamed, not stored
        response.timestamp_start = request.timestamp_end + wait
        response.timestamp_end = response.timestamp_start + took
    f = tflow.tflow(req=request, resp=response or False, live=live)
    f.client_conn.peername = (addr, 50000)
    f.client_conn.id = conn
    f.metadata.update(metadata or {})
    return f


def jwt(**claims: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'at+jwt'})}.{part(claims)}.c2lnbmF0dXJl"


def rpc(method: str = "tools/list", **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, **({"params": params} if params else {})}


def challenge(at: float = 0.0, www: str | None = CHALLENGE, **kw: Any) -> http.HTTPFlow:
    headers = {"WWW-Authenticate": www} if www else {}
    return make("POST", MCP, body=rpc("initialize"), status=401, resp_headers=headers,
                resp_body={"error": "invalid_token"}, at=at, **kw)


def prm(at: float = 1.0, url: str = PRM_URL, conn: str = "conn-1", addr: str = "10.0.0.7", **document: Any
        ) -> http.HTTPFlow:
    doc = {"resource": MCP, "authorization_servers": [AS], "scopes_supported": ["mcp:tools"], **document}
    return make("GET", url, status=200, resp_body={k: v for k, v in doc.items() if v is not None}, at=at, conn=conn,
                addr=addr)


def as_metadata(at: float = 2.0, url: str = AS_META, **document: Any) -> http.HTTPFlow:
    doc = {
        "issuer": AS,
        "authorization_endpoint": AS + "/authorize",
        "token_endpoint": AS + "/token",
        "registration_endpoint": AS + "/register",
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        **document,
    }
    return make("GET", url, status=200, resp_body={k: v for k, v in doc.items() if v is not None}, at=at)


def registration(at: float = 3.0, client_id: str = "client-1", redirect: str = REDIRECT, status: int = 201,
                 **kw: Any) -> http.HTTPFlow:
    answer: dict[str, Any] = {"client_id": client_id, "redirect_uris": [redirect]}
    if status >= 400:
        answer = {"error": "invalid_redirect_uri", "error_description": "no"}
    return make("POST", AS + "/register", body={"client_name": "c", "redirect_uris": [redirect]}, status=status,
                resp_body=answer, at=at, **kw)


def authorize(at: float = 4.0, client_id: str = "client-1", drop: tuple[str, ...] = (), **params: str) -> http.HTTPFlow:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "state": f"state-{client_id}",
        "code_challenge": "x" * 43,
        "code_challenge_method": "S256",
        "resource": MCP,
        "scope": "mcp:tools",
        **params,
    }
    query = {k: v for k, v in query.items() if k not in drop}
    from urllib.parse import urlencode

    return make("GET", f"{AS}/authorize?{urlencode(query)}", status=302,
                resp_headers={"Location": AS + "/login"}, at=at, conn=f"browser-{client_id}")


def callback(at: float = 5.0, state: str = "state-client-1", iss: str | None = AS, error: str | None = None,
             **kw: Any) -> http.HTTPFlow:
    params = f"error={error}&state={state}" if error else f"code=c0de&state={state}"
    if iss:
        params += f"&iss={iss}"
    kw.setdefault("conn", "browser")
    return make("GET", AS + "/login/resume", status=303, resp_headers={"Location": f"{REDIRECT}?{params}"}, at=at, **kw)


def token(at: float = 6.0, client_id: str = "client-1", access_token: str | None = None, resource: str | None = MCP,
          cache: str | None = "no-store", status: int = 200, verifier: bool = True, **kw: Any) -> http.HTTPFlow:
    form = {"grant_type": "authorization_code", "code": "c0de", "redirect_uri": REDIRECT, "client_id": client_id}
    if verifier:
        form["code_verifier"] = "v" * 43
    if resource:
        form["resource"] = resource
    from urllib.parse import urlencode

    answer: dict[str, Any] = {"access_token": access_token or jwt(aud=MCP, client_id=client_id), "token_type": "Bearer"}
    if status >= 400:
        answer = {"error": "invalid_grant", "error_description": "code expired"}
    return make("POST", AS + "/token", body=urlencode(form),
                headers={"Content-Type": "application/x-www-form-urlencoded"}, status=status,
                resp_headers={"Cache-Control": cache} if cache else {}, resp_body=answer, at=at, **kw)


RESULT = {"jsonrpc": "2.0", "id": 1, "result": {}}


def call(at: float = 7.0, bearer: str | None = None, status: int = 200, method: str = "tools/list",
         url: str = MCP, resp_headers: dict[str, str] | None = None, resp_body: Any = RESULT, **kw: Any
         ) -> http.HTTPFlow:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return make("POST", url, headers=headers, body=rpc(method), status=status, resp_headers=resp_headers,
                resp_body=resp_body, at=at, **kw)


def good_dance(client_id: str = "client-1", offset: float = 0.0, conn: str = "conn-1") -> list[http.HTTPFlow]:
    access = jwt(aud=MCP, client_id=client_id)
    return [
        challenge(offset + 0, conn=conn),
        make("GET", PRM_URL, status=200, resp_body={"resource": MCP, "authorization_servers": [AS]},
             at=offset + 1, conn=conn),
        make("GET", AS_META, status=200, resp_body=as_metadata().response.json(), at=offset + 2, conn=conn),  # type: ignore[union-attr]
        registration(offset + 3, client_id, conn=conn),
        authorize(offset + 4, client_id),
        callback(offset + 5, f"state-{client_id}"),
        token(offset + 6, client_id, access, conn=conn),
        call(offset + 7, access, conn=conn),
    ]


def doctor(flows: list[http.HTTPFlow]) -> Diagnosis:
    return diagnose(exchanges_from_flows(flows))


def checks(flows: list[http.HTTPFlow]) -> set[str]:
    """The checks that found something, but the note that a capture of MCP calls alone has no OAuth traffic."""
    return {f.check for f in doctor(flows).findings if f.check != "no-oauth-traffic"}


def finding(flows: list[http.HTTPFlow], check: str) -> Any:
    found = [f for f in doctor(flows).findings if f.check == check]
    assert len(found) == 1, [f.check for f in doctor(flows).findings]
    return found[0]


# --- the neutral record and the classifier -------------------------------------------------------


def test_stage_names_are_the_proxys() -> None:
    assert set(st.STAGE_NAMES) == {s.value for s in Stage}


def classify(f: http.HTTPFlow, *others: http.HTTPFlow) -> str | None:
    exchanges = exchanges_from_flows([*others, f])
    return st.classify_all(exchanges)[-1].stage


@pytest.mark.parametrize(
    ("flow", "stage"),
    [
        (make("GET", PRM_URL, status=200), st.RESOURCE_METADATA),
        (make("GET", ORIGIN + "/.well-known/oauth-protected-resource", status=404), st.RESOURCE_METADATA),
        (make("GET", AS_META, status=200), st.AS_METADATA),
        (make("GET", AS + "/tenant/.well-known/openid-configuration", status=200), st.AS_METADATA),
        (make("POST", AS + "/reg", body={"redirect_uris": [REDIRECT]}, status=201), st.REGISTRATION),
        (make("GET", AS + "/auth?response_type=code&client_id=c", status=303), st.AUTHORIZATION),
        (make("GET", AS + "/auth/x", status=303, resp_headers={"Location": REDIRECT + "?code=1&state=s"}),
         st.CALLBACK),
        (make("GET", ORIGIN + "/callback?code=1&state=s&iss=x", status=302), st.CALLBACK),
        (make("GET", AS + "/auth/x", status=303, resp_headers={"Location": REDIRECT + "?error=access_denied&state=s"}),
         st.CALLBACK),
        (make("POST", AS + "/token", body="grant_type=refresh_token&refresh_token=r",
              headers={"Content-Type": "application/x-www-form-urlencoded"}, status=200), st.TOKEN),
        (make("POST", AS + "/token/revocation", body="token=t", status=200), st.TOKEN),
        (challenge(), st.CHALLENGE),
        (call(bearer="t", status=401), st.REJECTED),
        (call(bearer="t", status=403), st.REJECTED),
        (call(bearer="t"), st.AUTHORIZED_CALL),
        (make("GET", ORIGIN + "/events", status=200, resp_headers={"Content-Type": "text/event-stream"}),
         st.AUTHORIZED_CALL),
        (make("GET", AS + "/interaction/abc", status=200, resp_body="<form>"), None),
        (make("GET", AS + "/jwks", status=200, resp_body={"keys": []}), None),
    ],
)
def test_passive_classification(flow: http.HTTPFlow, stage: str | None) -> None:
    assert classify(flow) == stage


def test_a_get_to_a_url_that_carried_json_rpc_is_an_mcp_request() -> None:
    stream = make("GET", MCP, headers={"Authorization": "Bearer t"}, status=405, at=2)
    assert classify(stream) is None
    assert classify(stream, call(bearer="t")) == st.AUTHORIZED_CALL
    assert classify(make("DELETE", MCP, status=401, at=2), call(bearer="t")) == st.CHALLENGE
    assert classify(make("POST", MCP + "?access_token=t", body=rpc(), status=401)) == st.REJECTED


def test_the_proxys_record_wins() -> None:
    f = make("GET", ORIGIN + "/anything", status=404, metadata={"mcp_auth.stage": "not-found"})
    assert classify(f) == st.NOT_FOUND
    classified = st.classify_all(exchanges_from_flows([f]))[0]
    assert classified.by_proxy


def test_client_url_in_reverse_mode_is_the_listening_address() -> None:
    f = make("POST", "http://127.0.0.1:3000/mcp", headers={"Host": "127.0.0.1:3000"}, status=200)
    f.client_conn.proxy_mode = mode_specs.ProxyMode.parse("reverse:http://127.0.0.1:3000")
    f.client_conn.sockname = ("127.0.0.1", 8000)
    f.client_conn.timestamp_tls_setup = None
    assert client_url(f) == "http://127.0.0.1:8000/mcp"
    assert exchange_from_flow(f).upstream_url == "http://127.0.0.1:3000/mcp"
    f.client_conn.timestamp_tls_setup = T0
    assert client_url(f) == "https://127.0.0.1:8000/mcp"
    f.request.host_header = "mcp.example.com"  # keep_host_header: the client's own Host
    assert client_url(f) == "https://mcp.example.com/mcp"


def test_client_url_in_regular_mode_is_the_request_url() -> None:
    assert client_url(make("GET", "https://mcp.example.com/mcp?x=1")) == "https://mcp.example.com/mcp?x=1"


def test_www_authenticate_parsing() -> None:
    [bearer] = parse_www_authenticate('Bearer error="invalid_token", error_description="a \\"b\\", c", scope=x')
    assert bearer.scheme == "Bearer"
    assert bearer.params == {"error": "invalid_token", "error_description": 'a "b", c', "scope": "x"}
    first, second = parse_www_authenticate('Basic realm="r", Bearer resource_metadata="https://x/y"')
    assert (first.scheme, second.scheme) == ("Basic", "Bearer")
    assert second.params["resource_metadata"] == "https://x/y"
    assert parse_www_authenticate("Bearer")[0].params == {}


def test_event_stream_parsing() -> None:
    events = sse_events(b": ping\n\nevent: message\ndata: {\"a\": 1}\n\ndata: x\r\ndata: y\r\n\r\ndata: tail")
    assert [(e.event, e.data) for e in events] == [("message", '{"a": 1}'), (None, "x\ny"), (None, "tail")]


def test_readers_never_raise_on_garbage() -> None:
    ex = Exchange("id", "POST", "https://x/y", request_headers=(("Authorization", "Basic !!!"),),
                  request_body=b"\xff\xfe", status=200, response_body=b"\xff")
    assert ex.request_json() is None and ex.response_json() is None and ex.request_form() is None
    assert ex.basic_client_id() is None and ex.bearer_token() is None and ex.jsonrpc_methods() == []


# --- the dance -------------------------------------------------------------------------------------


def test_a_good_dance_in_order_with_every_stage() -> None:
    report = build_dances(exchanges_from_flows(list(reversed(good_dance()))))
    [dance] = report.dances
    assert dance.client == "client-1"
    assert [s.stage for s in dance.steps] == [
        st.CHALLENGE, st.RESOURCE_METADATA, st.AS_METADATA, st.REGISTRATION, st.AUTHORIZATION, st.CALLBACK,
        st.TOKEN, st.AUTHORIZED_CALL,
    ]
    assert [s.outcome for s in dance.steps] == [EXPECTED, OK, OK, OK, OK, OK, OK, OK]
    assert dance.first_failure is None
    text = render(report, "x.mitm")
    assert GROUPING.split()[0] in text and "next flow with a client on the same client connection" in text
    assert "no stage failed; 1 authorized MCP call answered" in text


def test_two_clients_are_told_apart_and_clientless_flows_follow_their_connection() -> None:
    flows = good_dance("alice", 0, "conn-a") + good_dance("bob", 0.5, "conn-b")
    report = build_dances(exchanges_from_flows(flows))
    assert [d.client for d in report.dances] == ["alice", "bob"]
    for dance in report.dances:
        assert len(dance.steps) == 8
        assert {s.exchange.connection for s in dance.steps if s.stage == st.CHALLENGE} == {f"conn-{dance.client[0]}"}


def test_clientless_flow_joins_the_nearest_client_from_the_same_address() -> None:
    flows = [*good_dance("alice"), prm(at=7.5, conn="other-connection")]
    [dance] = build_dances(exchanges_from_flows(flows)).dances
    assert len(dance.steps) == 9


def test_flows_of_no_client_form_a_dance_per_address() -> None:
    flows = [challenge(0, addr="10.0.0.8"), prm(1, conn="x", addr="10.0.0.8"), challenge(2, addr="10.0.0.9")]
    report = build_dances(exchanges_from_flows(flows))
    assert [(d.client, d.address, len(d.steps)) for d in report.dances] == [(None, "10.0.0.8", 2),
                                                                             (None, "10.0.0.9", 1)]
    assert "unidentified client at 10.0.0.8" in render(report)


def test_client_from_state_and_token_without_client_ids_elsewhere() -> None:
    opaque = "opaque-token-1"
    flows = [authorize(0, "zed"), callback(1, "state-zed", conn="x"), token(2, "zed", opaque, conn="y"),
             call(3, opaque, conn="z")]
    [dance] = build_dances(exchanges_from_flows(flows)).dances
    assert dance.client == "zed" and len(dance.steps) == 4


def test_first_failure_is_the_first_failed_step() -> None:
    flows = good_dance()
    flows[5] = callback(5, error="access_denied")
    flows[6] = token(6, status=400)
    del flows[7]
    [dance] = build_dances(exchanges_from_flows(flows)).dances
    failure = dance.first_failure
    assert failure is not None and failure.stage == st.CALLBACK and failure.reason == "access_denied"
    assert "first failure at #6, stage callback" in render(build_dances(exchanges_from_flows(flows)))


def test_metadata_not_found_is_no_failure_when_found_next() -> None:
    flows = good_dance()
    flows.insert(1, make("GET", PRM_URL, status=404, at=0.5))
    flows[2] = prm(1, url=ORIGIN + "/.well-known/oauth-protected-resource")
    [dance] = build_dances(exchanges_from_flows(flows)).dances
    assert dance.first_failure is None
    assert dance.steps[1].outcome == "fallback"


def test_metadata_never_found_is_the_failure() -> None:
    flows = [challenge(0), make("GET", PRM_URL, status=404, at=1)]
    [dance] = build_dances(exchanges_from_flows(flows)).dances
    assert dance.first_failure is not None and dance.first_failure.stage == st.RESOURCE_METADATA
    assert "no later attempt succeeded" in (dance.first_failure.reason or "")
    assert "stopped" not in render(build_dances(exchanges_from_flows(flows)))


def test_rejected_step_names_the_failed_token_check_and_recovery() -> None:
    flows = good_dance()
    rejected = call(6.5, "bad", status=401, metadata={
        "mcp_auth.stage": "rejected", "mcp_auth.client": "client-1", "mcp_auth.explanation": "refused",
        "mcp_auth.token_checks": [{"check": "signature", "ok": True, "detail": "fine"},
                                  {"check": "aud", "ok": False, "detail": "aud is https://other"}],
    })
    flows.insert(7, rejected)
    report = build_dances(exchanges_from_flows(flows))
    failure = report.dances[0].first_failure
    assert failure is not None and failure.reason == "token check aud failed: aud is https://other"
    assert "Recovered: authorized MCP call answered at #9" in render(report)


def test_dance_that_stops_without_a_call() -> None:
    text = render(build_dances(exchanges_from_flows(good_dance()[:7])))
    assert "no stage failed, but the dance stopped after token" in text


def test_proxy_explanations_are_the_summaries() -> None:
    f = call(0, metadata={"mcp_auth.stage": "authorized-call", "mcp_auth.client": "c",
                          "mcp_auth.explanation": "token for alice valid; stripped it and forwarded"})
    [dance] = build_dances(exchanges_from_flows([f])).dances
    assert dance.steps[0].summary == "tools/list: token for alice valid; stripped it and forwarded"
    assert dance.steps[0].by_proxy


# --- the doctor: a clean dance, then every check ----------------------------------------------------


def test_a_clean_dance_has_no_errors_or_warnings() -> None:
    diagnosis = doctor(good_dance())
    assert [(f.check, f.severity) for f in diagnosis.findings] == [("token-reached-server", INFO)]
    assert not diagnosis.has_errors


@pytest.mark.parametrize(
    ("flow", "check"),
    [
        (make("GET", PRM_URL, status=301, resp_headers={"Location": "/x"}), "metadata-redirect"),
        (make("GET", AS_META, status=302, resp_headers={"Location": "/x"}), "metadata-redirect"),
        (make("GET", PRM_URL, status=401, resp_headers={"WWW-Authenticate": "Bearer"}), "metadata-protected"),
        (make("GET", AS_META, status=403), "metadata-protected"),
        (make("GET", PRM_URL, status=200, resp_body="<html>"), "metadata-not-json"),
    ],
)
def test_metadata_answers(flow: http.HTTPFlow, check: str) -> None:
    assert finding([flow], check).severity == ERROR


def test_prm_without_servers_or_resource() -> None:
    assert finding([prm(authorization_servers=[])], "prm-no-authorization-servers").severity == ERROR
    assert finding([prm(resource=None)], "prm-no-resource").severity == ERROR


def test_prm_resource_must_match_the_url_it_was_fetched_from() -> None:
    f = finding([prm(resource="http://10.1.1.1:3000/mcp")], "prm-resource-url")
    assert f.severity == ERROR and "must be https://mcp.example.com/mcp" in f.detail


def test_prm_resource_against_the_mcp_url_the_client_called() -> None:
    root = ORIGIN + "/.well-known/oauth-protected-resource"
    assert finding([challenge(), prm(url=root, resource=ORIGIN)], "prm-resource-not-exact").severity == WARNING
    f = finding([challenge(), prm(url=root, resource=ORIGIN + "/other")], "prm-resource-mismatch")
    assert f.severity == ERROR and "the client called https://mcp.example.com/mcp" in f.detail
    assert not checks([challenge(), prm(url=root)]) & {"prm-resource-mismatch", "prm-resource-not-exact"}


@pytest.mark.parametrize(
    ("url", "issuer"),
    [
        (AS + "/.well-known/oauth-authorization-server", AS),
        (AS + "/.well-known/oauth-authorization-server/tenant", AS + "/tenant"),
        (AS + "/.well-known/openid-configuration/tenant", AS + "/tenant"),
        (AS + "/tenant/.well-known/openid-configuration", AS + "/tenant"),
        (AS + "/jwks", None),
    ],
)
def test_expected_issuer_of_a_metadata_url(url: str, issuer: str | None) -> None:
    assert expected_issuer(url) == issuer


def test_as_metadata_checks() -> None:
    f = finding([as_metadata(issuer=AS + "/")], "asm-issuer-url")
    assert f.severity == ERROR and "RFC 8414 §3.3" in f.reference
    assert finding([as_metadata(token_endpoint=None)], "asm-endpoint-missing").severity == ERROR
    assert finding([as_metadata(code_challenge_methods_supported=None)], "asm-no-pkce").severity == ERROR
    assert finding([as_metadata(code_challenge_methods_supported=["plain"])], "asm-no-s256").severity == ERROR
    assert finding([as_metadata(authorization_response_iss_parameter_supported=None)],
                   "asm-no-iss-parameter").severity == INFO
    assert checks([as_metadata()]) == set()


def test_authorization_servers_0_must_be_the_issuer() -> None:
    f = finding([prm(authorization_servers=[AS + "/"]), as_metadata()], "prm-as-issuer")
    assert f.severity == ERROR and f"names {AS}/" in f.detail
    assert "prm-as-issuer" not in checks([prm(), as_metadata()])


def test_registration_checks() -> None:
    assert finding([registration(redirect="http://app.example.com/cb")], "redirect-uri-insecure").severity == ERROR
    assert finding([registration(status=400)], "registration-refused").severity == WARNING
    assert finding([registration(status=200)], "registration-200").severity == INFO
    assert checks([registration()]) == set()


@pytest.mark.parametrize(
    ("drop", "params", "check"),
    [
        (("code_challenge", "code_challenge_method"), {}, "pkce-missing"),
        ((), {"code_challenge_method": "plain"}, "pkce-plain"),
        (("code_challenge_method",), {}, "pkce-plain"),
        (("resource",), {}, "resource-missing"),
        ((), {"redirect_uri": "http://app.example.com/cb"}, "redirect-uri-insecure"),
    ],
)
def test_authorization_request_errors(drop: tuple[str, ...], params: dict[str, str], check: str) -> None:
    assert finding([authorize(drop=drop, **params)], check).severity == ERROR


def test_authorization_request_resource_and_state() -> None:
    f = finding([prm(), authorize(resource="https://other.example.com/mcp")], "resource-mismatch")
    assert f.severity == ERROR and f.stage == st.AUTHORIZATION
    assert finding([authorize(drop=("state",))], "state-missing").severity == WARNING
    assert checks([prm(), authorize()]) == set()


def test_authorization_response_checks() -> None:
    assert finding([callback(error="access_denied")], "authorization-error").severity == WARNING
    assert finding([as_metadata(), callback(iss=None)], "iss-missing").severity == ERROR
    assert "iss-missing" not in checks([as_metadata(authorization_response_iss_parameter_supported=False),
                                        callback(iss=None)])
    f = finding([as_metadata(), callback(iss="https://idp.example.com")], "iss-mismatch")
    assert f.severity == ERROR and "RFC 9207 §2.4" in f.reference
    assert checks([as_metadata(), callback()]) == set()


def test_a_proxys_own_callback_is_judged_by_what_it_sends_the_client() -> None:
    # The IdP's iss arrives in the query, the client gets the proxy's (= the metadata issuer).
    facade = make("GET", AS + "/callback?code=idp-code&state=sealed&iss=https://idp.example.com", status=302,
                  resp_headers={"Location": f"{REDIRECT}?code=sealed&state=s&iss={AS}"}, at=5)
    assert checks([as_metadata(), facade]) == set()


def test_token_request_checks() -> None:
    assert finding([token(resource=None)], "resource-missing").stage == st.TOKEN
    assert finding([prm(), token(resource="https://x.example.com")], "resource-mismatch").severity == ERROR
    assert finding([token(verifier=False)], "pkce-verifier-missing").severity == ERROR
    f = finding([token(cache=None)], "token-no-store")
    assert f.severity == ERROR and "RFC 6749 §5.1" in f.reference
    assert finding([token(cache="no-cache")], "token-no-store").detail == "Cache-Control: no-cache"
    assert finding([token(status=400)], "token-refused").severity == WARNING
    assert checks([token()]) == set()


def test_challenge_checks() -> None:
    assert finding([challenge(www=None)], "401-no-www-authenticate").severity == ERROR
    assert finding([challenge(www='Basic realm="x"')], "401-not-bearer").severity == ERROR
    # Without resource_metadata: an error when no PRM is found either, a warning when it is.
    assert finding([challenge(www='Bearer realm="mcp"')], "401-no-resource-metadata").severity == ERROR
    assert finding([challenge(www='Bearer scope="a"'), prm()], "401-no-resource-metadata").severity == WARNING
    assert finding([challenge(www='Bearer resource_metadata="/x", scope="a"')],
                   "401-resource-metadata-relative").severity == ERROR
    assert finding([challenge(www=f'Bearer resource_metadata="{PRM_URL}"')], "401-no-scope").severity == INFO
    assert checks([challenge()]) == set()


def test_403_checks() -> None:
    flows = [call(bearer="t", status=403, resp_headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})]
    f = finding(flows, "403-no-scope")
    assert f.severity == WARNING and f.stage == st.REJECTED
    assert finding([call(bearer="t", status=403)], "403-no-www-authenticate").severity == WARNING
    ok = 'Bearer error="insufficient_scope", scope="a b", resource_metadata="x"'
    assert checks([call(bearer="t", status=403, resp_headers={"WWW-Authenticate": ok})]) == set()


def test_token_in_the_query_string() -> None:
    flows = [make("POST", MCP + "?access_token=secret", body=rpc(), status=200, resp_body={"result": 1})]
    f = finding(flows, "token-in-query")
    assert f.severity == ERROR and "secret" not in f.detail


def test_token_reaching_the_server() -> None:
    assert finding([call(bearer="opaque")], "token-reached-server").severity == WARNING
    assert finding([call(bearer=jwt(aud=MCP))], "token-reached-server").severity == INFO
    f = finding([prm(), call(bearer=jwt(aud="https://other.example.com"))], "token-audience")
    assert f.severity == ERROR and "other.example.com" in f.detail
    # Refused calls are no problem of the server's: nothing about them.
    assert checks([call(bearer="opaque", status=401, resp_headers={"WWW-Authenticate": CHALLENGE})]) == set()


def test_findings_on_many_flows_are_merged() -> None:
    f = finding([call(i, bearer="opaque") for i in range(5)], "token-reached-server")
    assert [ex.index for ex in f.flows] == [1, 2, 3, 4, 5]


def test_the_proxy_strips_the_token_and_says_so() -> None:
    recorded = {"mcp_auth.stage": "authorized-call", "mcp_auth.client": "c"}
    assert checks([challenge(), call(metadata=recorded)]) == set()
    f = finding([call(bearer="t", metadata=recorded)], "token-forwarded-by-proxy")
    assert f.severity == ERROR


def test_unauthenticated_call_on_a_challenging_endpoint() -> None:
    assert finding([challenge(), call(1)], "unauthenticated-call").severity == WARNING
    assert checks([call(1)]) == set()


def test_token_passthrough() -> None:
    flows = [call(0, "tok-1"), make("GET", "https://api.example.com/data", headers={"Authorization": "Bearer tok-1"},
                                    status=200, at=0.01)]
    f = finding(flows, "token-passthrough")
    assert f.severity == ERROR and "https://api.example.com" in f.detail and "tok-1" not in f.detail
    # The same token to the same server again is no passthrough.
    assert "token-passthrough" not in checks([call(0, "tok-1"), call(1, "tok-1")])


def sse(events: int) -> str:
    return "".join(f'event: message\ndata: {{"n": {i}}}\n\n' for i in range(events))


def test_event_stream_buffered_before_the_capture() -> None:
    headers = {"Content-Type": "text/event-stream"}
    flows = [call(bearer=jwt(aud=MCP), resp_headers=headers, resp_body=sse(4), wait=1.2, took=0.01)]
    f = finding(flows, "sse-buffered")
    assert f.severity == WARNING and "4 events arrived within 10 ms, after 1.2 s" in f.detail


def test_event_stream_timing_that_tells_nothing() -> None:
    headers = {"Content-Type": "text/event-stream"}
    token_ = jwt(aud=MCP)
    # One event: no spacing to compare. Quick answer: nothing was held.
    assert not checks([call(bearer=token_, resp_headers=headers, resp_body=sse(1), wait=2)]) & {"sse-buffered"}
    assert not checks([call(bearer=token_, resp_headers=headers, resp_body=sse(3), wait=0.01)]) & {"sse-buffered"}
    # Spread over time: it streamed into the capture, which may have held it (a plain mitmproxy does).
    spread = [call(bearer=token_, resp_headers=headers, resp_body=sse(3), took=1.0)]
    assert finding(spread, "sse-capture-buffered").severity == INFO
    # Streamed by a proxy that stores nothing: cannot tell.
    assert finding([call(bearer=token_, resp_headers=headers, resp_body=None)], "sse-not-stored").severity == INFO
    # This proxy streams: a spread stream through it is what should be.
    recorded = {"mcp_auth.stage": "authorized-call", "mcp_auth.client": "c"}
    assert checks([call(resp_headers=headers, resp_body=sse(3), took=1.0, metadata=recorded)]) == set()


def test_what_the_capture_does_not_show_is_said() -> None:
    f = finding([challenge(), prm(), call(2, jwt(aud=MCP))], "no-oauth-traffic")
    assert f.severity == INFO and f.flows == []


def test_plain_http_to_a_remote_host() -> None:
    f = finding([make("GET", "http://mcp.example.com/.well-known/oauth-protected-resource/mcp", status=404)],
                "plain-http")
    assert f.severity == ERROR
    assert "plain-http" not in checks([make("GET", "http://127.0.0.1:8000/.well-known/oauth-protected-resource",
                                            status=404)])


def test_public_url_mapping() -> None:
    exchanges = exchanges_from_flows([make("GET", "http://10.0.0.5:8000/mcp?x=1")])
    map_public_urls(exchanges, ["http://10.0.0.5:8000=https://mcp.example.com/"])
    assert exchanges[0].url == "https://mcp.example.com/mcp?x=1"
    with pytest.raises(ValueError, match="SEEN=PUBLIC"):
        map_public_urls(exchanges, ["https://mcp.example.com"])


def write_capture(path: Path, flows: list[http.HTTPFlow]) -> Path:
    with path.open("wb") as f:
        writer = io.FlowWriter(f)
        for flow in flows:
            writer.add(flow)
    return path


def test_doctor_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_capture(tmp_path / "good.mitm", good_dance())
    assert main([str(good)]) == 0
    assert "0 errors, 0 warnings, 1 note." in capsys.readouterr().out
    bad = write_capture(tmp_path / "bad.mitm", [authorize(drop=("code_challenge",))])
    assert main([str(bad), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["summary"] == {"error": 1, "warning": 0, "info": 0}
    assert document["findings"][0]["check"] == "pkce-missing"
    assert document["findings"][0]["flows"][0]["flow"] == 1
    assert main([str(tmp_path / "missing.mitm")]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- the committed example captures, as a user runs them ---------------------------------------------


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_doctor_on_the_good_example() -> None:
    result = run(sys.executable, "-m", "addon.diagnosis.doctor", "docs/examples/good-dance.mitm")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors, 0 warnings" in result.stdout


def test_doctor_on_the_sloppy_example() -> None:
    result = run(sys.executable, "-m", "addon.diagnosis.doctor", "docs/examples/sloppy-client.mitm", "--json")
    assert result.returncode == 1, result.stderr
    found = {(f["check"], f["severity"]) for f in json.loads(result.stdout)["findings"]}
    assert found >= {
        ("401-no-resource-metadata", WARNING),
        ("metadata-redirect", ERROR),
        ("prm-resource-mismatch", ERROR),
        ("prm-as-issuer", ERROR),
        ("pkce-missing", ERROR),
        ("resource-missing", ERROR),
        ("authorization-error", WARNING),
        ("403-no-scope", WARNING),
        ("token-in-query", ERROR),
        ("token-reached-server", WARNING),
        ("sse-buffered", WARNING),
        ("token-passthrough", ERROR),
    }


def test_mitmdump_reads_the_good_example_and_prints_the_dance() -> None:
    result = run(MITMDUMP, "-nr", "docs/examples/good-dance.mitm", "-s", "addon/mcp_auth.py", "-q",
                 "--set", "mcp_auth_dance=true")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "MCP authorization dance: docs/examples/good-dance.mitm" in out
    order = [st.CHALLENGE, st.RESOURCE_METADATA, st.AS_METADATA, st.REGISTRATION, st.AUTHORIZATION, st.CALLBACK,
             st.TOKEN, st.AUTHORIZED_CALL]
    positions = [out.index(f"  {stage} ") for stage in order]
    assert positions == sorted(positions)
    assert "FAIL" not in out
    assert "Result: no stage failed" in out


def test_mitmdump_reads_the_sloppy_example_and_prints_the_doctor() -> None:
    result = run(MITMDUMP, "-nr", "docs/examples/sloppy-client.mitm", "-s", "addon/mcp_auth.py", "-q",
                 "--set", "mcp_auth_doctor=true", "--set", "mcp_auth_dance=true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Result: first failure at #6, stage authorization" in result.stdout
    assert "[pkce-missing]" in result.stdout and "[token-passthrough]" in result.stdout
