"""proxyless.resources.model."""
