"""proxyless.xds_client."""
