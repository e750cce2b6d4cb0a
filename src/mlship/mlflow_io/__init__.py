"""MLflow plumbing: runs, experiments and lineage tags (tracking), registered versions and aliases
(registry)."""
