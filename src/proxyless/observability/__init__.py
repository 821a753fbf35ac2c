"""What proxyless tells operators: the client status (CSDS, gRFC A40).

See :mod:`proxyless.observability.csds` and :mod:`proxyless.admin`.
"""

from proxyless.observability.csds import CsdsServicer, client_config

__all__ = ["CsdsServicer", "client_config"]
