"""proxyless.resources.parse."""
