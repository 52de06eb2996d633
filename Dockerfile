# The interpreter server: `docker build -t interpreter-server .`, then
# `docker run -p 8000:8000 -v interpreter-data:/var/lib/interpreter interpreter-server`.
# The same image runs the scale-out on PostgreSQL (docker-compose.yml, deploy/kubernetes/): API
# replicas with this CMD, workers with `python -m interpreter.worker` (as root, privileged, with
# INTERPRETER_SANDBOX=bwrap: see the comments there).
FROM python:3.11-slim

# node runs javascript jobs; bubblewrap is the sandbox (INTERPRETER_SANDBOX=bwrap; in a container
# it needs user namespaces and a delegated cgroup: see the README's Security section).
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs bubblewrap \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY interpreter/ ./interpreter/
RUN pip install --no-cache-dir .

# The server never runs as root; its data directory (SQLite store, job workspaces) is a volume.
RUN useradd --system --user-group --uid 10001 --create-home --home-dir /home/interpreter interpreter \
    && mkdir -p /var/lib/interpreter \
    && chown interpreter:interpreter /var/lib/interpreter

# The sandbox needs root, user namespaces and a delegated cgroup, which a default container does
# not have: the image opts out explicitly (the server logs a warning, GET /sandbox says "none").
# Run the image privileged with a delegated cgroup and INTERPRETER_SANDBOX=bwrap to sandbox jobs.
ENV INTERPRETER_HOST=0.0.0.0 \
    INTERPRETER_PORT=8000 \
    INTERPRETER_DATA_DIR=/var/lib/interpreter \
    INTERPRETER_SANDBOX=none
VOLUME ["/var/lib/interpreter"]

USER interpreter
# `python -m` puts the working directory first on sys.path: start from an empty one, so that the
# installed package is the one that runs and nothing in the data volume can shadow it.
WORKDIR /home/interpreter
EXPOSE 8000

# /health answers 503 when unhealthy, which urlopen raises as an error: the probe then exits 1.
# A worker serves no HTTP: its services replace this with `python -m interpreter.worker --check`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('INTERPRETER_PORT', '8000') + '/health', timeout=4)"]

CMD ["python", "-m", "interpreter.server"]
