# mailwarden: slim Python base, non-root user, pinned dependencies (requirements.lock, hashes checked), bytecode
# compiled at build, a health check that follows web.listen (`mailwarden healthcheck`).
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY core ./core
COPY monitor ./monitor
COPY checks ./checks
COPY alerts ./alerts
COPY dashboards ./dashboards
COPY sandbox ./sandbox
COPY deploy/strip_sandbox.py ./deploy/
# The dependencies exactly as locked (deploy/lock.py regenerates the lock), then the wheel without resolving again;
# pip check proves the lock complete. The wheel carries the sandbox (the demo's stand-in for Microsoft): a production
# image leaves it out.
RUN python -m venv /opt/mailwarden \
 && /opt/mailwarden/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock \
 && /opt/mailwarden/bin/pip install --no-cache-dir --no-deps . \
 && /opt/mailwarden/bin/pip check \
 && /opt/mailwarden/bin/python deploy/strip_sandbox.py \
 && /opt/mailwarden/bin/python -m compileall -q /opt/mailwarden/lib

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/mailwarden --create-home mailwarden
COPY --from=build /opt/mailwarden /opt/mailwarden
COPY deploy/docker-entrypoint.sh /usr/local/bin/mailwarden-entrypoint
ENV PATH=/opt/mailwarden/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    MAILWARDEN_CONFIG=/etc/mailwarden/mailwarden.yaml
USER mailwarden
WORKDIR /var/lib/mailwarden
EXPOSE 8080
# /healthz on web.listen when the config runs the web app, else a live `mailwarden serve` of this config (monitor/health.py)
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["mailwarden", "healthcheck", "--timeout", "4"]
ENTRYPOINT ["/bin/sh", "/usr/local/bin/mailwarden-entrypoint"]
CMD ["serve"]
