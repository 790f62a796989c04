"""The mitmproxy layer: small addon classes that move data between flows and `addon.protocol`."""
