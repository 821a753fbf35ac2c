"""Transport-agnostic runtime: per-cluster state and per-target routing."""
