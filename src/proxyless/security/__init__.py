"""proxyless.security."""
