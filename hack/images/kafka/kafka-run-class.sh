#!/usr/bin/env bash
# bin/kafka-run-class.sh of the stand-in: runs a class of the distribution's jars with the
# variables the upstream script reads (KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS,
# KAFKA_LOG4J_OPTS).
set -eu
: "${KAFKA_LOG4J_OPTS:=-Dlog4j2.configurationFile=/etc/kafka/docker/log4j2.yaml}"
: "${KAFKA_JVM_PERFORMANCE_OPTS:=-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
# shellcheck disable=SC2086  # the *_OPTS are word lists, as upstream
exec java ${KAFKA_HEAP_OPTS:-} $KAFKA_JVM_PERFORMANCE_OPTS ${KAFKA_OPTS:-} $KAFKA_LOG4J_OPTS \
  -cp '/opt/kafka/libs/*' "$@"
