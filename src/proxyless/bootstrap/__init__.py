"""proxyless.bootstrap."""
