# One image, either program:
#   docker run IMAGE broker serve --data-dir /var/lib/pta ...     (the default command)
#   docker run IMAGE agent run --state-dir /var/lib/pta-agent ...
#   docker run IMAGE signin --broker HOST:7443 --ca-file ca.pem alice@example.com
# Plain `docker build .` is enough: nothing here needs BuildKit.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore

# Without pip and setuptools in the venv, the runtime image carries no installer and no old
# setuptools for scanners to flag; the builder's own pip installs into it with --python.
RUN python -m venv --without-pip /opt/venv

WORKDIR /src

# Dependencies first, read from pyproject.toml alone, so that editing the code does not
# reinstall grpcio and cryptography. Every one of them ships wheels for 3.11 on amd64 and
# arm64, which is why the builder needs no compiler either.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip --python /opt/venv/bin/python install --no-cache-dir -r /tmp/requirements.txt

# The project itself, as a wheel (a real install, not the source tree: the runtime image gets
# exactly what the wheel ships), then a check that the venv's dependencies agree.
COPY . .
RUN pip wheel --no-cache-dir --no-deps -w /wheels . \
    && pip --python /opt/venv/bin/python install --no-cache-dir --no-deps /wheels/pta-*.whl \
    && pip --python /opt/venv/bin/python check


FROM python:3.11-slim-bookworm

# PTA_BROKER_DATA_DIR lets `docker exec CONTAINER pta-broker tenant add ...` and `token create`
# find the serving broker's store without repeating --data-dir (a flag still wins).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PTA_BROKER_DATA_DIR=/var/lib/pta

# The data directories are made here, before VOLUME, because a new volume starts as a copy of
# the image's directory: it then belongs to pta and is 0700 (the broker's holds its CA key).
# A bind mount keeps the host's owner instead: chown it to 10001 on the host.
#
# /usr/local/bin/pta maps the first word to a console script and execs it, so that the
# program is PID 1 and gets docker stop's SIGTERM, on which both stop cleanly (the broker
# first gives in-flight sign-ins their --grace).
#
# /usr/local/bin/pta-healthcheck asks the broker's public endpoint for its gRPC health over
# the broker's own TLS. It finds the port and CA in endpoints.json, which the broker writes
# once it serves, so a changed --listen is followed; where there is no such file (an agent
# container, whose /var/lib/pta is an empty volume) there is nothing to probe and it passes.
# It dials 127.0.0.1 but verifies the name localhost, which every server certificate carries.
# The $ in these scripts are meant literally, for the scripts to expand when they run:
# hadolint ignore=SC2016
RUN groupadd --gid 10001 pta \
    && useradd --uid 10001 --gid pta --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin pta \
    && install -d -o pta -g pta -m 0700 /var/lib/pta /var/lib/pta-agent \
    && printf '%s\n' \
        '#!/bin/sh' \
        '# pta ROLE ARGS...: broker, agent and signin run pta-broker, pta-agent, pta-signin.' \
        'case "${1-}" in' \
        '    broker) shift; exec /opt/venv/bin/pta-broker "$@" ;;' \
        '    agent) shift; exec /opt/venv/bin/pta-agent "$@" ;;' \
        '    signin) shift; exec /opt/venv/bin/pta-signin "$@" ;;' \
        '    "") echo "usage: pta broker|agent|signin ARGS... (or any command)" >&2; exit 2 ;;' \
        'esac' \
        'exec "$@"' \
        > /usr/local/bin/pta \
    && printf '%s\n' \
        '#!/opt/venv/bin/python' \
        '"""Docker HEALTHCHECK: gRPC health of the broker public endpoint, over its own TLS."""' \
        'import json, os, sys' \
        'data = os.environ.get("PTA_BROKER_DATA_DIR") or "/var/lib/pta"' \
        'try:' \
        '    with open(os.path.join(data, "endpoints.json")) as f:' \
        '        endpoints = json.load(f)' \
        'except FileNotFoundError:' \
        '    sys.exit(0)' \
        'import grpc' \
        'from grpc_health.v1 import health_pb2, health_pb2_grpc' \
        'host, _, port = endpoints["public"].rpartition(":")' \
        'host = "127.0.0.1" if host in ("", "0.0.0.0", "[::]") else host' \
        'with open(endpoints["ca_file"], "rb") as f:' \
        '    credentials = grpc.ssl_channel_credentials(f.read())' \
        'options = [("grpc.ssl_target_name_override", "localhost")]' \
        'with grpc.secure_channel(f"{host}:{port}", credentials, options) as channel:' \
        '    stub = health_pb2_grpc.HealthStub(channel)' \
        '    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)' \
        'sys.exit(reply.status != health_pb2.HealthCheckResponse.SERVING)' \
        > /usr/local/bin/pta-healthcheck \
    && chmod 0755 /usr/local/bin/pta /usr/local/bin/pta-healthcheck

COPY --from=builder /opt/venv /opt/venv

# Numeric, so that Kubernetes' runAsNonRoot can tell it is not root without reading passwd.
USER 10001:10001

VOLUME ["/var/lib/pta", "/var/lib/pta-agent"]

# 7443: public endpoint (sign-ins, enrolment, health, reflection; server-authenticated TLS).
# 7444: agent endpoint (Connect; the TLS handshake demands a certificate from the broker's CA).
EXPOSE 7443 7444

HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/pta-healthcheck"]

ENTRYPOINT ["/usr/local/bin/pta"]
CMD ["broker", "serve", "--data-dir", "/var/lib/pta", "--listen", "0.0.0.0:7443", "--agent-listen", "0.0.0.0:7444"]
