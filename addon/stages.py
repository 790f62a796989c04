"""The stage vocabulary: which step of the OAuth dance a flow is, as users see it.

The stage is what mitmweb shows on a flow (comment and mark), what the log lines carry
and what the tests assert. The names are part of the product's interface.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the vocabulary itself is plain: addon.diagnosis uses it without mitmproxy
    from mitmproxy import http

logger = logging.getLogger("mcp_auth")

# What the proxy records on each flow, for views, the dance command and saved flow files:
#   mcp_auth.stage            the stage name (below)
#   mcp_auth.explanation      the one-line explanation also in the comment
#   mcp_auth.client           the IdP's client id the flow belongs to, where known
#   mcp_auth.token            the bearer token sent, signature cut off (decodable, not replayable)
#   mcp_auth.token_checks     [{"check", "ok", "detail"}] for that token (protocol.tokens.check_report)
#   mcp_auth.metadata_source  on as-metadata flows: the IdP metadata URL and document the proxy rewrote
METADATA_KEY = "mcp_auth.stage"
EXPLANATION_KEY = "mcp_auth.explanation"
CLIENT_KEY = "mcp_auth.client"
TOKEN_KEY = "mcp_auth.token"
TOKEN_CHECKS_KEY = "mcp_auth.token_checks"
METADATA_SOURCE_KEY = "mcp_auth.metadata_source"


class Stage(StrEnum):
    RESOURCE_METADATA = "resource-metadata"
    AS_METADATA = "as-metadata"
    REGISTRATION = "registration"
    AUTHORIZATION = "authorization"
    CALLBACK = "callback"
    TOKEN = "token"
    CHALLENGE = "challenge"
    REJECTED = "rejected"
    AUTHORIZED_CALL = "authorized-call"
    NOT_FOUND = "not-found"


# mitmweb shortcodes, one per stage, so a workshop can say "the key is the token exchange".
MARKS: dict[Stage, str] = {
    Stage.RESOURCE_METADATA: ":page_facing_up:",
    Stage.AS_METADATA: ":bookmark_tabs:",
    Stage.REGISTRATION: ":memo:",
    Stage.AUTHORIZATION: ":door:",
    Stage.CALLBACK: ":leftwards_arrow_with_hook:",
    Stage.TOKEN: ":key:",
    Stage.CHALLENGE: ":lock:",
    Stage.REJECTED: ":no_entry:",
    Stage.AUTHORIZED_CALL: ":white_check_mark:",
    Stage.NOT_FOUND: ":grey_question:",
}


def record(
    flow: http.HTTPFlow, stage: Stage, explanation: str, client: str | None = None, answered: int | None = None
) -> None:
    """Put the stage on the flow for mitmweb and say it in the log, in one line.

    `answered`: the status written to the client when it is not `flow.response`'s (mitmproxy
    wrote it, see addon/proxy/error_pages.py)."""
    flow.metadata[METADATA_KEY] = stage.value
    flow.metadata[EXPLANATION_KEY] = explanation
    if client is not None:
        flow.metadata[CLIENT_KEY] = client
    flow.comment = f"{stage.value}: {explanation}"
    flow.marked = MARKS[stage]
    status = answered or (flow.response.status_code if flow.response else "→ upstream")
    level = logging.WARNING if stage in (Stage.REJECTED,) else logging.INFO
    logger.log(
        level,
        "[%s] %s %s %s: %s",
        stage.value,
        flow.request.method,
        flow.request.path.split("?")[0],
        status,
        explanation,
    )


_STAGE_BY_NAME = {stage.value: stage for stage in Stage}


def stage_of(flow: http.HTTPFlow) -> Stage | None:
    value = flow.metadata.get(METADATA_KEY)
    if not value:
        return None
    # A dict, not Stage(value): this runs several times on every call; an unknown name still raises.
    stage = _STAGE_BY_NAME.get(value)
    return stage if stage is not None else Stage(value)
