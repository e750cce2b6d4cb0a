"""The mlship Kubernetes operator (kopf): reconciles ModelDeployment resources."""
