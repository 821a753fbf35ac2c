"""proxyless.lb."""
