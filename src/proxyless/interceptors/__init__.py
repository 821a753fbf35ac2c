"""proxyless.interceptors."""
