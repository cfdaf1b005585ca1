# syntax=docker/dockerfile:1
# qtelemetry exporter image. Build from the repository root:
#   docker build -t qtelemetry:0.1.0 .
#   docker run --rm -p 127.0.0.1:9817:9817 qtelemetry:0.1.0        # the demo links
#   docker run --rm -p 127.0.0.1:9817:9817 -v "$PWD/site.yaml:/etc/qtelemetry/config.yaml:ro" qtelemetry:0.1.0
# The build context is an allowlist (.dockerignore): pyproject.toml, README.md, qtelemetry/ and the
# container config. See deploy/README.md.

# python:3.11-slim pinned to its Debian release, so that a rebuild never silently changes the OS.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A virtual environment at its final path, copied whole into the runtime stage: no compilers,
# pip caches or build files end up in the image.
RUN python -m venv /opt/qtelemetry
WORKDIR /src
COPY pyproject.toml README.md ./
COPY qtelemetry ./qtelemetry
RUN /opt/qtelemetry/bin/pip install '.[network]' \
 && /opt/qtelemetry/bin/qtelemetry --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="qtelemetry" \
      org.opencontainers.image.description="Prometheus exporter for quantum-network links (QKD, entanglement)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/qtelemetry/qtelemetry"
# A fixed, numeric, non-root uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
# /var/lib/qtelemetry/demo-pki is where `qtelemetry simulate --make-pki` writes in the compose demo
# (a named volume mounted there takes the directory's owner).
RUN groupadd --system --gid 10001 qtelemetry \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin qtelemetry \
 && mkdir -p /etc/qtelemetry/tls /var/lib/qtelemetry/demo-pki \
 && chown 10001:10001 /var/lib/qtelemetry/demo-pki
COPY --from=build /opt/qtelemetry /opt/qtelemetry
# The demo links listening on 0.0.0.0 (the embedded demo listens on 127.0.0.1, unreachable from
# outside a container). Mount your own config over this file.
COPY deploy/container/config.yaml /etc/qtelemetry/config.yaml
# Nothing is written at run time: the image works with a read-only root filesystem.
ENV PATH=/opt/qtelemetry/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 9817
ENTRYPOINT ["qtelemetry"]
CMD ["run", "--config", "/etc/qtelemetry/config.yaml"]
