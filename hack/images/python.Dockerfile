# Local stand-in for python:3.11-slim-bookworm, built from Debian's own Python 3.11, so that
# the project's Dockerfiles build unchanged on a machine that cannot pull from a registry.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && ln -s /usr/bin/pip3 /usr/local/bin/pip
# This machine reaches PyPI through a TLS proxy whose CA only the host's bundle holds: keep that
# bundle (installing ca-certificates above regenerated Debian's) and point pip and uv at it.
COPY host-ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV LANG=C.UTF-8 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
