"""mlship: Kubernetes-native ML pipelines."""
