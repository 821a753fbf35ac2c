"""Benchmarks of proxyless against a plain channel, grpcio's xDS and an Envoy sidecar pair.

Results and how to reproduce them: docs/benchmarks.md.
"""
