"""proxyless.resilience."""
