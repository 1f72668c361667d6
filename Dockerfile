# afterhours in a container. Build:  docker build -t afterhours .
# Run with an external PostgreSQL (production):
#   docker run --env-file afterhours.env -p 127.0.0.1:8080:8080 -p 127.0.0.1:8081:8081 afterhours
# (published on the host's loopback only: TLS and the public ports are the reverse
# proxy's, docs/deployment.md)
# Without DATABASE_URL the engine runs its embedded PostgreSQL under DATA_DIR (/data):
# mount a volume there to keep it. docs/deployment.md has the details.
FROM python:3.11-slim-bookworm

# The server binaries only serve the embedded PostgreSQL (no DATABASE_URL).
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --system --create-home --home-dir /app afterhours
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY actors actors
COPY api api
RUN pip install --no-cache-dir . && mkdir /data && chown afterhours /data

USER afterhours
ENV HOST=0.0.0.0 PORT=8080 MEDIA_PORT=8081 DATA_DIR=/data LOG_FORMAT=json
EXPOSE 8080 8081
VOLUME ["/data"]
# SIGTERM drains the calls, then stops: give `docker stop` the time (-t 90).
STOPSIGNAL SIGTERM
# The port the engine was given (PORT may be overridden at `docker run -e PORT=...`).
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import os,sys,urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2).status != 200)"
ENTRYPOINT ["afterhours", "serve"]
