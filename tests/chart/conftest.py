"""Chart render tests: `helm template` only, no cluster (see chart_helpers)."""
