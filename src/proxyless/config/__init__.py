"""Per-target config: follows LDS -> RDS -> CDS -> EDS and publishes whole snapshots."""

from proxyless.config.snapshot import ClusterConfig, XdsConfig
from proxyless.config.watcher import ConfigWatcher, clusters_of_route_config

__all__ = ["ClusterConfig", "ConfigWatcher", "XdsConfig", "clusters_of_route_config"]
