"""mlship's model server: `python -m mlship.serving`.

Serves one MLflow model version with MLflow's scoring protocol and the Open Inference Protocol
(V2), batching concurrent requests into single model calls.

Environment (the contract with the operator; validated at start-up, every problem reported at
once, exit code 2 if any):

    MLFLOW_TRACKING_URI        the tracking/registry server (required for models:/ URIs)
    MLSHIP_MODEL_NAME          registered model name          } the operator sets these two
    MLSHIP_MODEL_VERSION       registered version (1, 2, ...) }
    MLSHIP_MODEL_URI           instead of name + version: models:/<name>/<version>,
                               models:/<name>@<alias> (resolved once at start-up), or a local path
    PORT                       listen port (default 8080)
    MLSHIP_MAX_BATCH_SIZE      rows per model call, at most (default 64)
    MLSHIP_MAX_BATCH_WAIT_MS   how long a batch may wait for more requests (default 2; never
                               waits when only one request is in flight)
    MLSHIP_LOG_LEVEL           DEBUG, INFO (default), WARNING, ERROR, CRITICAL; DEBUG adds
                               access logs
    MLSHIP_SHUTDOWN_TIMEOUT_S  how long SIGTERM waits for in-flight requests (default 25,
                               below Kubernetes' default 30 s grace period)
    MLSHIP_HOST                bind address (default 0.0.0.0)
    MLSHIP_INFERENCE_LOG_SAMPLE_RATE
                               share of /invocations requests whose inputs and predictions are
                               logged, 0..1 (default 0: off): as prediction events to Kafka when
                               MLSHIP_KAFKA_BOOTSTRAP_SERVERS is set, else to MLflow (needs
                               MLFLOW_TRACKING_URI; see mlship.serving.recorder)
    MLSHIP_INFERENCE_LOG_FLUSH_SECONDS
                               how often the log is written to MLflow (default 10)
    MLSHIP_INFERENCE_LOG_EXPERIMENT
                               MLflow experiment of the log (default mlship-inference)
    MLSHIP_KAFKA_BOOTSTRAP_SERVERS
                               host:port[,host:port...] of Kafka: turns on prediction events
                               and POST /feedback (default unset: off); see docs/events.md
    MLSHIP_KAFKA_PREDICTIONS_TOPIC, MLSHIP_KAFKA_LABELS_TOPIC
                               the topics (default mlship.predictions, mlship.labels)
    MLSHIP_KAFKA_QUEUE_MAX_MESSAGES
                               events waiting for Kafka, at most; beyond it new ones are dropped
                               and counted (default 100000)
    MLSHIP_KAFKA_LINGER_MS     how long an event may wait to be batched (default 50)
    MLSHIP_AUTH_TOKEN          bearer token /invocations, /feedback and V2 infer require
                               (default unset: none; mlship.serving.auth)
    MLSHIP_ROUTING_TOKEN       bearer token of /admin/routing, which exists only when it is set
                               (canary and shadow routing; docs/serving-routing.md)

Endpoints:

    POST /invocations   MLflow scoring protocol -> {"predictions": [...]}; 400 with a message
                        naming the problem for input that does not fit the signature, 415 for a
                        content type other than application/json or text/csv (as MLflow).
                        Every answer carries X-Request-Id (the client's, or 32 new hex
                        characters; one that cannot key an event is a 400), X-Model-Name and
                        X-Model-Version
    POST /feedback      ground-truth labels, one {request_id, row, label} or a list -> 202
                        {"accepted": n}, produced to Kafka; 400 naming the problem (nothing of
                        the request is taken), 503 when the event queue is full, 404 without
                        Kafka (docs/events.md)
    GET  /ping, /health 200 once the model is loaded and has scored its own input example
                        through /invocations' code path; 503 before (readiness probe)
    GET  /livez         200 while the process runs, also while loading (liveness probe)
    GET  /version       the MLflow version, a bare string (as MLflow)
    GET  /metadata      served model name, version, URI, run id, signature
    /v2/...             the Open Inference Protocol (KServe v2) REST API: health, server and
                        model metadata, POST /v2/models/<name>/infer scoring as /invocations
                        does (docs/serving-v2.md)
    PUT, GET /admin/routing
                        with MLSHIP_ROUTING_TOKEN only: the operator's canary or shadow route
                        (a share of /invocations to a candidate version), and what was counted
                        for it (docs/serving-routing.md)
    GET  /metrics       Prometheus: mlship_requests_total, mlship_request_duration_seconds,
                        mlship_batch_rows, mlship_predict_duration_seconds, mlship_model_ready,
                        mlship_inference_log_{rows,dropped_rows,flush_failures}_total,
                        mlship_inference_log_buffered_rows,
                        mlship_events_{produced,delivered,delivery_failures,dropped}_total (by
                        topic; dropped also by reason), mlship_events_queued, all labelled with
                        model_name and model_version

Failure policy. A version that cannot be loaded (exit code 3) or fails its self-test (exit
code 4) makes the process exit at once rather than linger unready: the pod crash-loops, which
the operator sees in seconds (container restarts, `lastState.terminated`) instead of waiting
for a progress deadline, and the reason is written to /dev/termination-log, which Kubernetes
reports as the container's termination message. Readiness stays 503 until then, so a broken
version never receives traffic; with `maxUnavailable: 0` the old pods keep serving.

Shutdown. On SIGTERM the server stops accepting connections, answers the requests it already
has (the batcher drains its queue), then exits 0. Kubernetes keeps routing to a terminating pod
for a moment after SIGTERM, so the pod spec should delay it with a short preStop sleep. With
the inference log on, the rows still buffered are written to MLflow before the process exits
(5 s at most); with Kafka, the queued events are sent (5 s at most).
"""
