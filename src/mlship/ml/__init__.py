"""The pipeline's ML core: datasets, validation rules, features, estimators, metrics and the
quality gate. Pure logic on DataFrames and fitted models; nothing here talks to MLflow."""
