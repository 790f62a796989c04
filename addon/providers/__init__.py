"""Provider profiles: what the proxy has to know about one kind of identity provider.

A profile is data: which registration fields and scopes the IdP refuses from a proxy,
which client authentication it accepts without saying so, what its issuer looks like, and
how to explain its refusals to the person who has to fix the IdP. Protocol code asks the
profile; it never tests for an IdP by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProviderProfile:
    name: str
    description: str
    # Registration metadata not passed on to the IdP's registration endpoint.
    registration_fields_dropped: frozenset[str] = frozenset()
    # Scopes removed from the `scope` the proxy registers upstream.
    registration_scopes_dropped: frozenset[str] = frozenset()
    # Client authentication methods the IdP accepts at registration even where its metadata does not list them.
    token_endpoint_auth_methods: tuple[str, ...] = ()
    # A pattern the configured issuer must match, and what to tell the user when it does not.
    issuer_pattern: re.Pattern[str] | None = None
    issuer_example: str = ""
    # (substring of an IdP refusal, what the administrator should do)
    refusal_hints: tuple[tuple[str, str], ...] = field(default=())

    def hint_for(self, refusal: str) -> str | None:
        for needle, hint in self.refusal_hints:
            if needle.lower() in refusal.lower():
                return hint
        return None

    def registration_scope(self, scope: str | None) -> str | None:
        if scope is None:
            return None
        kept = [s for s in scope.split() if s not in self.registration_scopes_dropped]
        return " ".join(kept) or None


def _profiles() -> dict[str, ProviderProfile]:
    from addon.providers import generic, keycloak

    return {p.name: p for p in (generic.PROFILE, keycloak.PROFILE)}


def names() -> list[str]:
    return list(_profiles())


def profile(name: str) -> ProviderProfile:
    return _profiles()[name]
