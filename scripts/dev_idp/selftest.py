#!/usr/bin/env python3
"""End-to-end self test of the dev identity provider (scripts/dev_idp/idp.mjs).

Usage:
    python scripts/dev_idp/selftest.py http://127.0.0.1:9000
        test an already running IdP (its static client must have the redirect
        URI given by --static-redirect-uri, default http://127.0.0.1:8000/callback)
    python scripts/dev_idp/selftest.py --spawn
        start idp.mjs on a free port (and a second instance with --auto-login),
        test them, stop them

Needs httpx and PyJWT (with cryptography). Exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt

HERE = Path(__file__).resolve().parent
RESOURCE = "http://127.0.0.1:8000/mcp"


class Failure(Exception):
    pass


def check(cond: bool, what: str, detail: object = "") -> None:
    if not cond:
        raise Failure(f"{what}{': ' + str(detail) if detail != '' else ''}")


def ok(msg: str) -> None:
    print(f"PASS {msg}", flush=True)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def code_grant(code: str, redirect_uri: str, code_verifier: str, **extra: str) -> dict[str, str]:
    """An authorization_code token request's form."""
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
        **extra,
    }


def short(resp: httpx.Response) -> str:
    return f"HTTP {resp.status_code} {resp.text[:300]!r}"


class Tester:
    def __init__(self, issuer: str, static_redirect_uri: str) -> None:
        self.issuer = issuer.rstrip("/")
        self.static_redirect_uri = static_redirect_uri
        self.meta: dict = {}
        self.jwks: jwt.PyJWKSet | None = None

    # -- helpers -----------------------------------------------------------
    def http(self) -> httpx.Client:
        return httpx.Client(follow_redirects=False, timeout=10.0)

    def verify_access_token(self, token: str, client_id: str, scope: str, aud: str = RESOURCE) -> dict:
        header = jwt.get_unverified_header(token)
        check(header.get("alg") == "RS256", "access token alg RS256", header)
        check(header.get("typ", "").lower() == "at+jwt", "access token typ at+jwt", header)
        kid = header.get("kid")
        check(bool(kid), "access token has kid", header)
        assert self.jwks is not None
        key = next((k for k in self.jwks.keys if k.key_id == kid), None)
        check(key is not None, "access token kid is in /jwks", kid)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=aud,
            issuer=self.meta["issuer"],
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
        check(claims.get("sub") == "testuser", "access token sub", claims.get("sub"))
        check(claims.get("client_id") == client_id, "access token client_id", claims.get("client_id"))
        granted = set(str(claims.get("scope", "")).split())
        check(set(scope.split()) <= granted, f"access token scope contains {scope}", claims.get("scope"))
        return claims

    def authorize(
        self,
        c: httpx.Client,
        client_id: str,
        redirect_uri: str,
        scope: str,
        *,
        resource: str | None = RESOURCE,
        expect: str = "form",
    ) -> tuple[str, str]:
        """Runs the browser part of the code flow; returns (code, code_verifier).

        expect: "form" (log in through the HTML form, also trying a wrong
        password first), "consent" (session exists, consent auto-granted) or
        "auto" (server runs with --auto-login) or "direct" (session and grant
        exist: /auth redirects straight to the client).
        """
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if scope:
            params["scope"] = scope
        if resource:
            params["resource"] = resource
        r = c.get(self.meta["authorization_endpoint"], params=params)
        check(r.status_code in (302, 303), "authorize redirects to the interaction", short(r))
        url = urljoin(str(r.url), r.headers["location"])
        if expect == "direct":
            check(url.startswith(redirect_uri), "authorize redirects straight to the client", url[:120])
        else:
            check("/interaction/" in url, "authorize redirects to /interaction/<uid>", url)
            r = c.get(url)
        if expect == "direct":
            pass
        elif expect == "form":
            check(r.status_code == 200, "login form shown", short(r))
            check('name="username"' in r.text and 'name="password"' in r.text, "form has username/password")
            m = re.search(r'<form method="post" action="([^"]+/login)"', r.text)
            check(m is not None, "form posts to /interaction/<uid>/login")
            action = urljoin(url, m.group(1))
            check(client_id in r.text, "form shows the client id")

            bad = c.post(action, data={"username": "testuser", "password": "wrong"})
            check(bad.status_code in (200, 401), "wrong password -> form again (200/401)", short(bad))
            check(
                'name="password"' in bad.text and "Invalid username or password" in bad.text,
                "wrong password -> form with error",
            )
            r = c.post(action, data={"username": "testuser", "password": "testpass"})
            check(r.status_code in (302, 303), "login POST redirects", short(r))
        else:
            check(r.status_code in (302, 303), f"interaction ({expect}) finishes without form", short(r))

        # follow redirects inside the IdP until we reach the client's redirect_uri
        for _ in range(6):
            loc = urljoin(str(r.url), r.headers["location"])
            if loc.startswith(redirect_uri.split("?")[0]) or not loc.startswith(self.issuer):
                break
            r = c.get(loc)
            check(r.status_code in (302, 303), f"IdP redirect chain at {urlsplit(loc).path}", short(r))
        else:
            raise Failure("too many redirects")

        check(loc.startswith(redirect_uri), "redirected to the client's redirect_uri", loc[:120])
        q = parse_qs(urlsplit(loc).query)
        check(
            "error" not in q,
            "authorization response without error",
            q.get("error_description", q.get("error")),
        )
        check(q.get("state") == [state], "state returned")
        check(q.get("iss") == [self.meta["issuer"]], "iss (RFC 9207) in authorization response", q.get("iss"))
        check(bool(q.get("code")), "code returned")
        return q["code"][0], verifier

    # -- tests -------------------------------------------------------------
    def run(self, auto_issuer: str | None = None) -> None:
        with self.http() as c:
            r = c.get(f"{self.issuer}/.well-known/openid-configuration")
            check(r.status_code == 200, "openid-configuration", short(r))
            self.meta = r.json()
            r2 = c.get(f"{self.issuer}/.well-known/oauth-authorization-server")
            check(r2.status_code == 200, "oauth-authorization-server", short(r2))
            check(r2.json() == self.meta, "RFC 8414 document equals OIDC discovery document")
            m = self.meta
            check(m["issuer"] == self.issuer, "issuer matches", m["issuer"])
            for ep in (
                "authorization_endpoint",
                "token_endpoint",
                "registration_endpoint",
                "jwks_uri",
                "introspection_endpoint",
                "revocation_endpoint",
            ):
                check(str(m.get(ep, "")).startswith(self.issuer + "/"), f"{ep} under issuer", m.get(ep))
            check(
                m.get("authorization_response_iss_parameter_supported") is True,
                "authorization_response_iss_parameter_supported",
            )
            check(m.get("code_challenge_methods_supported") == ["S256"], "PKCE S256 only")
            check(
                {"openid", "offline_access", "mcp:tools", "mcp:admin"} <= set(m.get("scopes_supported", [])),
                "scopes_supported",
            )
            ok("discovery: /.well-known/openid-configuration == /.well-known/oauth-authorization-server")

            r = c.get(m["jwks_uri"])
            check(r.status_code == 200, "jwks", short(r))
            keys = r.json()["keys"]
            check(
                len(keys) == 1
                and keys[0]["kty"] == "RSA"
                and keys[0].get("kid")
                and keys[0].get("alg") == "RS256"
                and "d" not in keys[0],
                "jwks has one public RS256 key",
                keys,
            )
            self.jwks = jwt.PyJWKSet.from_dict(r.json())
            ok(f"jwks: one RS256 key kid={keys[0]['kid'][:12]}...")

            # -- registration -------------------------------------------------
            r = c.post(
                m["registration_endpoint"],
                json={
                    "client_name": "selftest native",
                    "application_type": "native",
                    "redirect_uris": ["http://127.0.0.1:33333/cb"],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "none",
                    "scope": "mcp:tools",
                },
            )
            check(r.status_code == 201, "register native public client", short(r))
            native = r.json()
            check("client_secret" not in native, "native public client has no secret")
            ok(f"registered native public client {native['client_id']}")

            r = c.post(
                m["registration_endpoint"],
                json={
                    "client_name": "selftest web",
                    "application_type": "web",
                    "redirect_uris": ["http://127.0.0.1:8123/callback"],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                },
            )
            check(r.status_code == 201, "register web client (http loopback redirect)", short(r))
            web = r.json()
            check(
                web.get("token_endpoint_auth_method") == "client_secret_basic" and web.get("client_secret"),
                "web client defaults to client_secret_basic with a secret",
                web,
            )
            ok(f"registered web confidential client {web['client_id']} (client_secret_basic)")

            r = c.post(
                m["registration_endpoint"],
                json={"redirect_uris": ["http://127.0.0.1:1/cb"], "scope": "mcp:unknown"},
            )
            check(
                r.status_code == 400 and r.json().get("error") == "invalid_client_metadata",
                "unknown scope in registration rejected",
                short(r),
            )
            ok("registration with an unsupported scope -> 400 invalid_client_metadata")

        # -- native client: form login, PKCE, resource, JWT, refresh ---------
        with self.http() as c:
            redirect = "http://127.0.0.1:33333/cb"
            code, verifier = self.authorize(c, native["client_id"], redirect, "mcp:tools")
            ok("native: authorize -> login form -> wrong password shows form again -> login -> code + state + iss")

            r = c.post(
                m["token_endpoint"],
                data=code_grant(code, redirect, "x" * 43, client_id=native["client_id"], resource=RESOURCE),
            )
            check(
                r.status_code == 400 and r.json().get("error") == "invalid_grant",
                "wrong code_verifier rejected",
                short(r),
            )
            # (the failed attempt does not consume the code)
            r = c.post(
                m["token_endpoint"],
                data=code_grant(code, redirect, verifier, client_id=native["client_id"], resource=RESOURCE),
            )
            check(r.status_code == 200, "native: code exchange", short(r))
            tok = r.json()
            check(tok.get("token_type") == "Bearer", "token_type Bearer", tok.get("token_type"))
            check(bool(tok.get("refresh_token")), "refresh token issued (no offline_access needed)")
            claims = self.verify_access_token(tok["access_token"], native["client_id"], "mcp:tools")
            ok(
                f"native: token exchange -> RS256 at+jwt, aud={claims['aud']}, scope={claims['scope']!r}, "
                f"sub={claims['sub']}, client_id ok, exp-iat={claims['exp'] - claims['iat']}s, signature ok"
            )

            r = c.post(
                m["token_endpoint"],
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": tok["refresh_token"],
                    "client_id": native["client_id"],
                },
            )
            check(r.status_code == 200, "native: refresh (without resource)", short(r))
            tok2 = r.json()
            self.verify_access_token(tok2["access_token"], native["client_id"], "mcp:tools")
            check(
                tok2.get("refresh_token") and tok2["refresh_token"] != tok["refresh_token"],
                "refresh token rotated",
            )
            r = c.post(
                m["token_endpoint"],
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": tok["refresh_token"],
                    "client_id": native["client_id"],
                },
            )
            check(
                r.status_code == 400 and r.json().get("error") == "invalid_grant",
                "old refresh token rejected",
                short(r),
            )
            ok(
                "native: refresh_token grant -> new JWT for the granted resource, refresh token rotated, "
                "old one rejected"
            )

            # RFC 8252: native loopback redirect with another port
            redirect2 = "http://127.0.0.1:44444/cb"
            code, verifier = self.authorize(c, native["client_id"], redirect2, "mcp:tools", expect="consent")
            r = c.post(
                m["token_endpoint"],
                data=code_grant(code, redirect2, verifier, client_id=native["client_id"]),
            )
            check(r.status_code == 200, "native: code exchange (other loopback port)", short(r))
            ok("native: loopback redirect with a different port accepted; existing session -> consent auto-granted")

            # web client in the same browser session: consent only, and a token
            # request without resource (granted resource is used)
            redirect = "http://127.0.0.1:8123/callback"
            code, verifier = self.authorize(c, web["client_id"], redirect, "mcp:tools mcp:admin", expect="consent")
            r = c.post(
                m["token_endpoint"],
                auth=(web["client_id"], web["client_secret"]),
                data=code_grant(code, redirect, verifier),
            )
            check(r.status_code == 200, "web: code exchange (client_secret_basic, no resource)", short(r))
            tok = r.json()
            self.verify_access_token(tok["access_token"], web["client_id"], "mcp:tools mcp:admin")
            check(bool(tok.get("refresh_token")), "web: refresh token issued")
            r = c.post(
                m["token_endpoint"],
                auth=(web["client_id"], web["client_secret"]),
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": tok["refresh_token"],
                    "resource": RESOURCE,
                },
            )
            check(r.status_code == 200, "web: refresh", short(r))
            self.verify_access_token(r.json()["access_token"], web["client_id"], "mcp:tools mcp:admin")
            ok("web: session reused (consent auto-granted), code exchange without resource -> aud=resource, refresh ok")

        # -- static confidential client mcp-proxy ---------------------------
        with self.http() as c:
            redirect = self.static_redirect_uri
            code, verifier = self.authorize(c, "mcp-proxy", redirect, "openid offline_access mcp:tools")
            r = c.post(
                m["token_endpoint"],
                data=code_grant(code, redirect, verifier, resource=RESOURCE),
            )
            check(
                r.status_code in (400, 401) and r.json().get("error") in ("invalid_request", "invalid_client"),
                "static client without credentials rejected",
                short(r),
            )
            r = c.post(
                m["token_endpoint"],
                auth=("mcp-proxy", "wrong-secret"),
                data=code_grant(code, redirect, verifier, resource=RESOURCE),
            )
            check(
                r.status_code == 401 and r.json().get("error") == "invalid_client",
                "static client with a wrong secret rejected",
                short(r),
            )
            # the code is not consumed by a failed client authentication
            r = c.post(
                m["token_endpoint"],
                auth=("mcp-proxy", "mcp-proxy-secret"),
                data=code_grant(code, redirect, verifier, resource=RESOURCE),
            )
            check(r.status_code == 200, "static: code exchange (client_secret_basic)", short(r))
            tok = r.json()
            claims = self.verify_access_token(tok["access_token"], "mcp-proxy", "mcp:tools")
            check(bool(tok.get("id_token")), "static: id_token issued for openid scope")
            idt = jwt.decode(tok["id_token"], options={"verify_signature": False})
            check(
                idt.get("sub") == "testuser"
                and idt.get("email") == "testuser@example.com"
                and idt.get("name") == "Test User"
                and idt.get("aud") == "mcp-proxy",
                "id_token claims sub/email/name",
                idt,
            )
            check(bool(tok.get("refresh_token")), "static: refresh token issued")
            ok(
                f"static mcp-proxy: form login, client_secret_basic exchange -> JWT aud={claims['aud']}, "
                f"id_token with email/name, refresh token"
            )

            r = c.post(
                m["token_endpoint"],
                auth=("mcp-proxy", "mcp-proxy-secret"),
                data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]},
            )
            check(r.status_code == 200, "static: refresh", short(r))
            tok2 = r.json()
            self.verify_access_token(tok2["access_token"], "mcp-proxy", "mcp:tools")
            rt = tok2.get("refresh_token") or tok["refresh_token"]
            ok("static mcp-proxy: refresh_token grant ok")

            r = c.post(m["introspection_endpoint"], auth=("mcp-proxy", "mcp-proxy-secret"), data={"token": rt})
            check(r.status_code == 200 and r.json().get("active") is True, "introspect refresh token", short(r))
            r = c.post(m["revocation_endpoint"], auth=("mcp-proxy", "mcp-proxy-secret"), data={"token": rt})
            check(r.status_code == 200, "revoke refresh token", short(r))
            r = c.post(
                m["token_endpoint"],
                auth=("mcp-proxy", "mcp-proxy-secret"),
                data={"grant_type": "refresh_token", "refresh_token": rt},
            )
            check(
                r.status_code == 400 and r.json().get("error") == "invalid_grant",
                "revoked refresh token rejected",
                short(r),
            )
            ok("static mcp-proxy: introspection (active) and revocation of the refresh token")

            # a resource that is not an absolute http(s) URL
            verifier, challenge = pkce_pair()
            r = c.get(
                m["authorization_endpoint"],
                params={
                    "response_type": "code",
                    "client_id": "mcp-proxy",
                    "redirect_uri": redirect,
                    "scope": "mcp:tools",
                    "state": "s",
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                    "resource": "urn:example:thing",
                },
            )
            loc = r.headers.get("location", "")
            check(
                r.status_code in (302, 303) and "error=invalid_target" in loc,
                "non-http resource -> invalid_target",
                short(r),
            )
            # PKCE is required, even for confidential clients
            r = c.get(
                m["authorization_endpoint"],
                params={
                    "response_type": "code",
                    "client_id": "mcp-proxy",
                    "redirect_uri": redirect,
                    "scope": "mcp:tools",
                    "state": "s",
                    "resource": RESOURCE,
                },
            )
            loc = r.headers.get("location", "")
            check(
                r.status_code in (302, 303) and "error=invalid_request" in loc,
                "missing PKCE rejected",
                short(r),
            )
            ok("invalid_target for a non-http resource; PKCE required for the confidential client")

        if auto_issuer:
            auto = Tester(auto_issuer, self.static_redirect_uri)
            with auto.http() as c:
                auto.meta = c.get(f"{auto_issuer}/.well-known/openid-configuration").json()
                auto.jwks = jwt.PyJWKSet.from_dict(c.get(auto.meta["jwks_uri"]).json())
                code, verifier = auto.authorize(c, "mcp-proxy", self.static_redirect_uri, "mcp:tools", expect="auto")
                r = c.post(
                    auto.meta["token_endpoint"],
                    auth=("mcp-proxy", "mcp-proxy-secret"),
                    data=code_grant(code, self.static_redirect_uri, verifier, resource=RESOURCE),
                )
                check(r.status_code == 200, "auto-login: code exchange", short(r))
                claims = auto.verify_access_token(r.json()["access_token"], "mcp-proxy", "mcp:tools")
                check(
                    claims["exp"] - claims["iat"] == 120,
                    "--access-token-ttl applied",
                    claims["exp"] - claims["iat"],
                )
                ok("--auto-login testuser: no form, code issued; --access-token-ttl 120 applied")
                code, verifier = auto.authorize(c, "mcp-proxy", self.static_redirect_uri, "", expect="direct")
                r = c.post(
                    auto.meta["token_endpoint"],
                    auth=("mcp-proxy", "mcp-proxy-secret"),
                    data=code_grant(code, self.static_redirect_uri, verifier),
                )
                check(r.status_code == 200, "default scope: code exchange", short(r))
                auto.verify_access_token(r.json()["access_token"], "mcp-proxy", "mcp:tools")
            ok("--default-scope mcp:tools: authorization request without scope -> token with scope mcp:tools")


def spawn(*extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        ["node", str(HERE / "idp.mjs"), "--port", "0", "--exit-on-stdin-eof", "--quiet", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"dev-idp listening issuer=(\S+) port=(\d+)$", line.strip())
        if m:
            return proc, m.group(1)
    proc.kill()
    raise Failure(f"idp did not start (last line {line!r})")


def stop(proc: subprocess.Popen, via_stdin: bool = False) -> None:
    if via_stdin:
        assert proc.stdin is not None
        proc.stdin.close()
    else:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise Failure("idp did not exit") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("issuer", nargs="?", help="issuer URL of a running dev IdP")
    ap.add_argument("--spawn", action="store_true", help="start idp.mjs itself (default when no issuer is given)")
    ap.add_argument(
        "--static-redirect-uri",
        default="http://127.0.0.1:8000/callback",
        help="a redirect URI registered for the static client mcp-proxy",
    )
    ns = ap.parse_args()

    procs: list[subprocess.Popen] = []
    try:
        auto_issuer = None
        if ns.issuer and not ns.spawn:
            issuer = ns.issuer
        else:
            p, issuer = spawn("--static-client-redirect-uri", ns.static_redirect_uri)
            procs.append(p)
            p2, auto_issuer = spawn(
                "--static-client-redirect-uri",
                ns.static_redirect_uri,
                "--auto-login",
                "testuser",
                "--access-token-ttl",
                "120",
                "--default-scope",
                "mcp:tools",
            )
            procs.append(p2)
            print(f"spawned {issuer} and {auto_issuer} (auto-login)", flush=True)
        Tester(issuer, ns.static_redirect_uri).run(auto_issuer)
        if procs:
            stop(procs[0])
            ok("idp exits on SIGTERM")
            stop(procs[1], via_stdin=True)
            ok("idp exits when stdin closes (--exit-on-stdin-eof)")
            procs.clear()
    except (Failure, httpx.HTTPError, jwt.PyJWTError, KeyError, json.JSONDecodeError) as e:
        print(f"FAIL {type(e).__name__}: {e}", flush=True)
        return 1
    finally:
        for p in procs:
            p.kill()
            p.wait()
    print("selftest: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
