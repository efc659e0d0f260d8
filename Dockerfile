# mailwarden: slim Python base, non-root user, bytecode compiled at build, healthcheck on /healthz.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY monitor ./monitor
COPY checks ./checks
COPY alerts ./alerts
COPY dashboards ./dashboards
COPY sandbox ./sandbox
COPY deploy/strip_sandbox.py ./deploy/
# the wheel carries the sandbox (the demo's stand-in for Microsoft): a production image leaves it out
RUN python -m venv /opt/mailwarden \
 && /opt/mailwarden/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/mailwarden/bin/pip install --no-cache-dir . \
 && /opt/mailwarden/bin/python deploy/strip_sandbox.py \
 && /opt/mailwarden/bin/python -m compileall -q /opt/mailwarden/lib

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/mailwarden --create-home mailwarden
COPY --from=build /opt/mailwarden /opt/mailwarden
ENV PATH=/opt/mailwarden/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    MAILWARDEN_CONFIG=/etc/mailwarden/mailwarden.yaml
USER mailwarden
WORKDIR /var/lib/mailwarden
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["mailwarden"]
CMD ["serve"]
