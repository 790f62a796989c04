"""Any standards-following OpenID Provider / OAuth authorization server (oidc-provider among them)."""

from addon.providers import ProviderProfile

PROFILE = ProviderProfile(
    name="generic",
    description="any IdP that follows RFC 8414 / OpenID discovery, RFC 7591 and RFC 8707",
)
