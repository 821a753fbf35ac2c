"""proxyless.routing."""
