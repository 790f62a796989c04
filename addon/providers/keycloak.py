"""Keycloak 26.x, one realm as the IdP (issuer http(s)://host/realms/<realm>).

What differs from the generic profile, each seen against Keycloak 26.7.3:
- `client_uri` becomes the client's base URL, which the anonymous "Trusted Hosts"
  registration policy checks against its host list: a client's home page would make
  the registration fail, so it is not passed on.
- `openid` is not a client scope in Keycloak; the "Allowed Client Scopes" policy refuses a
  registration naming it.
- public clients (`token_endpoint_auth_method: none`) are registered as asked, though the
  discovery document does not list `none`.
"""

import re

from addon.providers import ProviderProfile

_POLICIES = "the realm's Clients > Client registration > Anonymous access policies"

PROFILE = ProviderProfile(
    name="keycloak",
    description="Keycloak 26.x (a realm's issuer, http(s)://host/realms/<realm>)",
    registration_fields_dropped=frozenset({"client_uri"}),
    registration_scopes_dropped=frozenset({"openid"}),
    token_endpoint_auth_methods=("none", "client_secret_post", "client_secret_basic"),
    issuer_pattern=re.compile(r"^https?://[^/]+(/[^/]+)*/realms/[^/]+$"),
    issuer_example="http://localhost:8080/realms/mcp",
    refusal_hints=(
        (
            "Trusted Hosts",
            f"Keycloak's 'Trusted Hosts' policy refused the proxy: in {_POLICIES}, add the address the proxy "
            "connects from and the host of public_url (the proxy's /callback) to Trusted Hosts",
        ),
        (
            "Allowed Client Scopes",
            f"Keycloak's 'Allowed Client Scopes' policy refused a requested scope: in {_POLICIES}, allow the "
            "scope (it must exist as a client scope), or have the client register without it",
        ),
        (
            "Max Clients",
            f"Keycloak's 'Max Clients' policy is exhausted: raise it in {_POLICIES}, or delete stale clients",
        ),
        (
            "Consent Required",
            f"Keycloak's 'Consent Required' policy refused the registration; see {_POLICIES}",
        ),
    ),
)
