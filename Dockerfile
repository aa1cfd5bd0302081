# driftline worker image: small (slim base, wheels only), non-root, with a healthcheck.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY driftline ./driftline
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres]'

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/driftline --create-home driftline
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'driftline[postgres]' \
    && rm -rf /wheels
USER 10001
WORKDIR /var/lib/driftline
ENV DRIFTLINE_WEB_HOST=0.0.0.0 \
    DRIFTLINE_WEB_PORT=6066 \
    DRIFTLINE_MONITORS_PATH=/etc/driftline/monitors.yaml \
    DRIFTLINE_DATA_DIR=/var/lib/driftline/data \
    PYTHONUNBUFFERED=1
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['DRIFTLINE_WEB_PORT']}/healthz\", timeout=2)"]
ENTRYPOINT ["driftline"]
CMD ["worker"]
