"""The dance per client: each step in order, its outcome, and the first stage that failed.

Grouping (also printed at the top of every report, since it is a heuristic):

1. A flow belongs to the client the proxy recorded (`mcp_auth.client`: the IdP's client id).
   Without that record the client is read from the HTTP: `client_id` of the registration
   answer, the authorization request and the token request (or its Basic credentials); the
   `state` of an authorization response leads back to the authorization request that sent it;
   an MCP call belongs to the client that was given its access token (or to the `client_id` /
   `azp` claim of a JWT).
2. Flows that carry no client (challenge, resource-metadata, as-metadata, ...) join the next
   flow with a client on the same client connection; otherwise the flow with a client nearest
   in time from the same client address.
3. What is left forms one dance per client address ("unidentified client").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from addon.diagnosis import classify as st
from addon.diagnosis.classify import Classified, authorization_response, classify_all, number, token_presented
from addon.diagnosis.exchange import Exchange, jwt_claims

OK = "ok"
EXPECTED = "expected"
FALLBACK = "fallback"
FAILED = "failed"

GROUPING = (
    "Grouping: by the IdP's client id the proxy recorded on the flow, else the client_id read from the "
    "registration, authorization and token requests, the state of the authorization response, and the access "
    "token a client was given. Flows without a client (challenge, resource-metadata, as-metadata) join the next "
    "flow with a client on the same client connection, else the nearest one in time from the same client "
    "address. Times are UTC."
)


@dataclass
class Step:
    exchange: Exchange
    stage: str
    by_proxy: bool
    outcome: str
    summary: str
    reason: str | None = None

    @property
    def status(self) -> str:
        ex = self.exchange
        if ex.status is not None:
            return str(ex.status)
        return "→ upstream" if ex.proxy is not None and ex.error is None else "—"


@dataclass
class Dance:
    client: str | None
    address: str
    steps: list[Step] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.client is None:
            return f"unidentified client at {self.address or '?'}"
        return f"client {short_id(self.client)}"

    @property
    def first_failure(self) -> Step | None:
        return next((s for s in self.steps if s.outcome == FAILED), None)

    @property
    def authorized_calls(self) -> list[Step]:
        return [s for s in self.steps if s.stage == st.AUTHORIZED_CALL and s.outcome == OK]

    @property
    def furthest(self) -> str | None:
        reached = [s.stage for s in self.steps if s.outcome in (OK, EXPECTED) and s.stage in st.DANCE_ORDER]
        if not reached:
            return None
        return max(reached, key=st.DANCE_ORDER.index)


@dataclass
class DanceReport:
    dances: list[Dance]
    others: list[Exchange]
    """Exchanges that are no step of any dance (login pages, favicons, ...)."""
    total: int


def short_id(value: str, limit: int = 32) -> str:
    """Client ids are not secrets, but sealed ones are long: keep the ends."""
    return value if len(value) <= limit else f"{value[:14]}…{value[-8:]}"


# --- what each step did -------------------------------------------------------------------------


def _list(values: object) -> str:
    if isinstance(values, list):
        return ", ".join(str(v) for v in values) or "none"
    return str(values)


def _error_text(error: str, description: str | None) -> str:
    return f"{error}: {description}" if description else error


def passive_summary(c: Classified) -> str:
    """A one-line account of the step, read from the HTTP (the proxy's explanation when it has one)."""
    ex = c.exchange
    if ex.proxy is not None and ex.proxy.explanation:
        calls = ex.jsonrpc_summary() if c.stage in st.MCP_STAGES else ""
        return f"{calls}: {ex.proxy.explanation}" if calls else ex.proxy.explanation
    if ex.status is None:
        return f"no response ({ex.error})" if ex.error else "no response recorded"
    error = ex.oauth_error()
    document = ex.response_json()
    location = ex.location()
    if c.stage == st.RESOURCE_METADATA and ex.status == 200 and isinstance(document, dict):
        return (
            f"resource {document.get('resource')!s}; authorization servers "
            f"{_list(document.get('authorization_servers'))}"
        )
    if c.stage == st.AS_METADATA and ex.status == 200 and isinstance(document, dict):
        return f"issuer {document.get('issuer')!s}"
    if c.stage == st.REGISTRATION and isinstance(document, dict) and "client_id" in document:
        return f"registered client_id {short_id(str(document['client_id']))}"
    if c.stage in (st.AUTHORIZATION, st.CALLBACK):
        answer = authorization_response(ex)
        if answer is not None and answer.in_redirect:
            if answer.error:
                return f"sent the client back with error {_error_text(answer.error, answer.error_description)}"
            iss = f", iss={answer.iss}" if answer.iss else ", no iss"
            return f"sent the client back to {answer.target} with a code{iss}"
        if location:
            return f"redirected to {location.split('?', 1)[0]}"
    if c.stage == st.TOKEN and isinstance(document, dict) and "access_token" in document:
        grant = ex.form_param("grant_type") or "?"
        scope = f", scope {document['scope']}" if document.get("scope") else ""
        expires = f", expires in {document['expires_in']} s" if document.get("expires_in") else ""
        return f"{grant}: {document.get('token_type', '?')} token{scope}{expires}"
    if c.stage in (st.CHALLENGE, st.REJECTED):
        value = ex.response_header("www-authenticate")
        if value:
            return f"WWW-Authenticate: {value}"
        if ex.status in (401, 403):
            return "no WWW-Authenticate header"
    if c.stage == st.AUTHORIZED_CALL:
        what = ex.jsonrpc_summary() or ex.method
        token = (
            "with a Bearer token"
            if ex.bearer_token()
            else "with a token in the query"
            if token_presented(ex)
            else "without a token"
        )
        kind = ex.response_content_type or "no body"
        return f"{what} {token}; answered {kind}"
    if error is not None:
        return _error_text(*error)
    if location:
        return f"redirected to {location.split('?', 1)[0]}"
    return ex.response_content_type or "empty answer"


def judge(c: Classified) -> tuple[str, str | None]:
    """(outcome, reason) of one step, before looking at the rest of its dance."""
    ex = c.exchange
    stage = c.stage
    if ex.status is None:
        if ex.proxy is not None and stage == st.AUTHORIZED_CALL and ex.error is None:
            return OK, None  # forwarded; the capture ended before the answer
        return FAILED, f"no response ({ex.error})" if ex.error else "no response recorded"
    status = ex.status
    error = ex.oauth_error()
    error_text = _error_text(*error) if error else None
    if stage in (st.RESOURCE_METADATA, st.AS_METADATA):
        # Not found here is normal when the client finds it at the next well-known URL: settled
        # against the rest of the dance (_settle_fallbacks). The doctor still reports redirects.
        if status == 200:
            return OK, None
        if 300 <= status < 400:
            return FALLBACK, f"answered {status}, a redirect to {ex.location()}; clients do not follow it"
        if status in (401, 403):
            return FALLBACK, f"answered {status}: the metadata is protected, clients cannot read it"
        if 400 <= status < 500:
            return FALLBACK, f"answered {status}: not at this URL (clients try the next well-known URL)"
        return FAILED, f"answered {status}" + (f": {error_text}" if error_text else "")
    if stage == st.CHALLENGE:
        return EXPECTED, None
    if stage == st.REJECTED:
        if ex.proxy is not None:
            check = ex.proxy.failed_check
            if check is not None:
                return FAILED, f"token check {check.get('check')} failed: {check.get('detail')}"
            if ex.proxy.explanation:
                return FAILED, ex.proxy.explanation
        for challenge in ex.www_authenticate():
            if "error" in challenge.params:
                return FAILED, _error_text(challenge.params["error"], challenge.params.get("error_description"))
        return FAILED, error_text or f"answered {status}"
    if stage in (st.AUTHORIZATION, st.CALLBACK):
        answer = authorization_response(ex)
        if answer is not None and answer.error and (answer.in_redirect or stage == st.CALLBACK):
            return FAILED, _error_text(answer.error, answer.error_description)
        if status >= 400:
            return FAILED, (ex.proxy.explanation if ex.proxy and ex.proxy.explanation else None) or error_text or (
                f"answered {status}"
            )
        return OK, None
    if stage == st.NOT_FOUND:
        return FALLBACK, f"answered {status}: not an endpoint there"
    if status >= 400:
        if ex.proxy is not None and ex.proxy.explanation and stage != st.AUTHORIZED_CALL:
            return FAILED, ex.proxy.explanation
        return FAILED, error_text or f"answered {status}"
    return OK, None


# --- grouping -----------------------------------------------------------------------------------


def _response_client_id(ex: Exchange) -> str | None:
    document = ex.response_json()
    if isinstance(document, dict) and isinstance(document.get("client_id"), str):
        return document["client_id"]
    return None


def _own_client(c: Classified, token_owner: dict[str, str], state_owner: dict[str, str]) -> str | None:
    ex = c.exchange
    if ex.proxy is not None and ex.proxy.client:
        return ex.proxy.client
    if c.stage == st.REGISTRATION:
        return _response_client_id(ex) or None
    if c.stage == st.AUTHORIZATION:
        return ex.query_param("client_id") or ex.form_param("client_id")
    if c.stage == st.TOKEN:
        return ex.form_param("client_id") or ex.basic_client_id()
    if c.stage == st.CALLBACK:
        answer = authorization_response(ex)
        if answer is not None and answer.state in state_owner:
            return state_owner[answer.state]
        state = ex.query_param("state")
        return state_owner.get(state) if state else None
    if c.stage in st.MCP_STAGES:
        token = ex.bearer_token() or ex.query_param("access_token")
        if token and token in token_owner:
            return token_owner[token]
        claims = jwt_claims(token)
        if claims:
            value = claims.get("client_id") or claims.get("azp")
            return value if isinstance(value, str) else None
    return None


def _owners(classified: Sequence[Classified]) -> tuple[dict[str, str], dict[str, str]]:
    """Who was given which token, and who sent which state, from the flows that say so."""
    token_owner: dict[str, str] = {}
    state_owner: dict[str, str] = {}
    for c in classified:
        ex = c.exchange
        if c.stage == st.AUTHORIZATION:
            client = _own_client(c, {}, {})
            state = ex.query_param("state") or ex.form_param("state")
            if client and state:
                state_owner.setdefault(state, client)
        elif c.stage == st.TOKEN:
            client = _own_client(c, {}, {})
            document = ex.response_json()
            if client and isinstance(document, dict):
                for key in ("access_token", "refresh_token"):
                    if isinstance(document.get(key), str):
                        token_owner.setdefault(document[key], client)
    return token_owner, state_owner


def build_dances(exchanges: Sequence[Exchange]) -> DanceReport:
    ordered = number(exchanges)
    classified = classify_all(ordered)
    token_owner, state_owner = _owners(classified)
    in_dance = [c for c in classified if c.stage is not None]
    others = [c.exchange for c in classified if c.stage is None]

    owner: dict[int, str | None] = {}
    for c in in_dance:
        owner[c.exchange.index] = _own_client(c, token_owner, state_owner)
    with_client = [c for c in in_dance if owner[c.exchange.index] is not None]
    for c in in_dance:
        ex = c.exchange
        if owner[ex.index] is not None:
            continue
        later_same_connection = [
            o for o in with_client if o.exchange.connection == ex.connection and o.exchange.started >= ex.started
        ]
        if ex.connection and later_same_connection:
            owner[ex.index] = owner[later_same_connection[0].exchange.index]
            continue
        same_address = [o for o in with_client if o.exchange.client_address == ex.client_address]
        if same_address:
            nearest = min(same_address, key=lambda o: abs(o.exchange.started - ex.started))
            owner[ex.index] = owner[nearest.exchange.index]

    dances: dict[tuple[str | None, str], Dance] = {}
    for c in in_dance:
        ex = c.exchange
        client = owner[ex.index]
        key = (client, "" if client is not None else ex.client_address)
        dance = dances.get(key)
        if dance is None:
            dance = dances[key] = Dance(client, ex.client_address)
        outcome, reason = judge(c)
        assert c.stage is not None
        dance.steps.append(Step(ex, c.stage, c.by_proxy, outcome, passive_summary(c), reason))
    for dance in dances.values():
        _settle_fallbacks(dance)
    ordered_dances = sorted(dances.values(), key=lambda d: d.steps[0].exchange.started)
    return DanceReport(ordered_dances, others, len(ordered))


def _settle_fallbacks(dance: Dance) -> None:
    """A metadata URL that was not found is normal when the client then finds it at the next one."""
    for i, step in enumerate(dance.steps):
        if step.outcome != FALLBACK:
            continue
        later = dance.steps[i + 1 :]
        if step.stage == st.NOT_FOUND:
            recovered = any(s.outcome == OK for s in later)
        else:
            recovered = any(s.stage == step.stage and s.outcome == OK for s in later)
        if not recovered:
            step.outcome = FAILED
            step.reason = f"{step.reason}; no later attempt succeeded"


# --- the text -----------------------------------------------------------------------------------

MARK = {OK: "ok", EXPECTED: "ok", FALLBACK: "~", FAILED: "FAIL"}


def render(report: DanceReport, source: str = "") -> str:
    lines: list[str] = []
    title = f"MCP authorization dance{': ' + source if source else ''}"
    lines.append(title)
    lines.append("=" * len(title))
    steps = sum(len(d.steps) for d in report.dances)
    lines.append(
        f"{report.total} flows: {steps} in {len(report.dances)} dance{'' if len(report.dances) == 1 else 's'}, "
        f"{len(report.others)} not part of a dance."
    )
    lines.extend(_wrap(GROUPING, 100))
    if not report.dances:
        lines.append("")
        lines.append("No step of an MCP authorization dance in these flows.")
    for dance in report.dances:
        lines.append("")
        lines.extend(render_dance(dance))
    if report.others:
        lines.append("")
        shown = ", ".join(f"#{ex.index} {ex.method} {ex.path}" for ex in report.others[:8])
        more = f" and {len(report.others) - 8} more" if len(report.others) > 8 else ""
        lines.append(f"Not part of a dance: {shown}{more}.")
    return "\n".join(lines) + "\n"


def render_dance(dance: Dance) -> list[str]:
    first_time = dance.steps[0].exchange.time
    last_time = dance.steps[-1].exchange.time
    where = dance.address or "address unknown"
    heading = f"{dance.label} ({where}): {len(dance.steps)} steps, {first_time} to {last_time}"
    lines = [heading, "-" * len(heading)]
    width = max(len(s.stage) for s in dance.steps)
    for step in dance.steps:
        ex = step.exchange
        mark = MARK[step.outcome]
        lines.append(
            f"  #{ex.index:<3} {ex.time}  {step.stage:<{width}}  {mark:<4} {step.status:>3} {ex.method} {ex.path}"
        )
        lines.append(f"{'':<{26 + width}}{step.summary}")
        if step.reason and step.outcome in (FAILED, FALLBACK) and step.reason not in step.summary:
            lines.append(f"{'':<{26 + width}}→ {step.reason}")
    lines.append(result_line(dance))
    return lines


def result_line(dance: Dance) -> str:
    failure = dance.first_failure
    calls = dance.authorized_calls
    if failure is None:
        if calls:
            plural = "" if len(calls) == 1 else "s"
            return f"  Result: no stage failed; {len(calls)} authorized MCP call{plural} answered."
        furthest = dance.furthest or "nothing"
        return f"  Result: no stage failed, but the dance stopped after {furthest} (no authorized MCP call answered)."
    ex = failure.exchange
    text = f"  Result: first failure at #{ex.index}, stage {failure.stage} ({ex.time}): {failure.reason}"
    recovered = [s for s in calls if s.exchange.started > ex.started]
    if recovered:
        text += f". Recovered: authorized MCP call answered at #{recovered[0].exchange.index}."
    else:
        text += "."
    return text


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return lines


def to_json(report: DanceReport) -> list[dict[str, object]]:
    return [
        {
            "client": dance.client,
            "address": dance.address,
            "first_failure": (
                {
                    "flow": dance.first_failure.exchange.index,
                    "stage": dance.first_failure.stage,
                    "reason": dance.first_failure.reason,
                }
                if dance.first_failure
                else None
            ),
            "steps": [
                {
                    "flow": s.exchange.index,
                    "id": s.exchange.id,
                    "time": s.exchange.started,
                    "stage": s.stage,
                    "stage_from": "proxy" if s.by_proxy else "http",
                    "method": s.exchange.method,
                    "url": s.exchange.url_without_query,
                    "status": s.exchange.status,
                    "outcome": s.outcome,
                    "summary": s.summary,
                    "reason": s.reason,
                }
                for s in dance.steps
            ],
        }
        for dance in report.dances
    ]


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m addon.diagnosis.dance",
        description="Each client's MCP authorization dance in a mitmproxy capture (.mitm): stage, time, outcome, "
        "first failure.",
    )
    parser.add_argument("file", help="a mitmproxy flow file (mitmdump -w, or mitmweb File > Save)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    from addon.diagnosis.flows import read_exchanges  # mitmproxy only for reading the file

    try:
        exchanges = read_exchanges(args.file)
    except Exception as e:  # OSError, FlowReadException: say so, no traceback
        print(f"dance: cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    report = build_dances(exchanges)
    if args.json:
        print(json.dumps(to_json(report), indent=2, ensure_ascii=False))
    else:
        print(render(report, args.file), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
