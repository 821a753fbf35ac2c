"""proxyless.config."""
