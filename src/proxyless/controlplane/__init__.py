"""proxyless.controlplane."""
