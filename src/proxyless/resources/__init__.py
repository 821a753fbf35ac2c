"""proxyless.resources."""
