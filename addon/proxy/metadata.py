"""Discovery: protected resource metadata (RFC 9728) and, in facade mode, the proxy's AS metadata."""

from __future__ import annotations

from mitmproxy import http

from addon.config import Settings
from addon.protocol.errors import json_body
from addon.protocol.identity_provider import IdentityProviderUnavailable
from addon.protocol.resource_metadata import resource_metadata
from addon.protocol.server_metadata import facade_metadata
from addon.proxy import answers
from addon.proxy.configuration import Configuration
from addon.stages import METADATA_SOURCE_KEY, Stage, record


class Discovery:
    def __init__(self, config: Configuration) -> None:
        self.config = config
        self._resource_metadata: tuple[Settings, bytes] | None = None

    def resource_metadata(self, flow: http.HTTPFlow) -> None:
        settings = self.config.current().settings
        # The document depends on the settings alone: serialized once per configuration.
        if self._resource_metadata is None or self._resource_metadata[0] is not settings:
            servers = [settings.public_url] if settings.facade else [settings.issuer]
            document = resource_metadata(settings.resource, servers, settings.scopes, settings.resource_name)
            self._resource_metadata = (settings, json_body(document))
        flow.response = answers.public_document(self._resource_metadata[1])
        where = "this proxy" if settings.facade else f"the IdP {settings.issuer}"
        record(flow, Stage.RESOURCE_METADATA, f"served PRM for {settings.resource}; authorization server is {where}")

    async def server_metadata(self, flow: http.HTTPFlow) -> None:
        rt = self.config.current()
        settings = rt.settings
        try:
            upstream = await rt.idp.metadata()
        except IdentityProviderUnavailable as e:
            flow.response = answers.oauth_error(
                503,
                "temporarily_unavailable",
                f"the identity provider's metadata is not available: {e}",
                {"Retry-After": str(e.retry_after)},
            )
            record(flow, Stage.AS_METADATA, f"IdP metadata unavailable: {e}")
            return
        facade = facade_metadata(
            upstream,
            settings.public_url,
            settings.scopes,
            settings.registration.mode == "static",
            settings.profile.token_endpoint_auth_methods,
        )
        flow.response = answers.public_json(facade.document)
        flow.metadata[METADATA_SOURCE_KEY] = {"url": upstream.source_url, "document": upstream.document}
        rewritten = [n for n, (_, after) in facade.changes.items() if str(after).startswith(settings.public_url)]
        removed = [n for n, (_, after) in facade.changes.items() if after is None and n.endswith("_endpoint")]
        explanation = f"rewrote {upstream.source_url}: {', '.join(rewritten)} now point at the proxy"
        if removed:
            explanation += f"; left out {', '.join(removed)} (they would bypass the proxy)"
        record(flow, Stage.AS_METADATA, explanation)
