# The interpreter server, every job in the bubblewrap sandbox:
#   docker build -t interpreter-server .
#   docker run --privileged --cgroupns=private -p 8000:8000 \
#       -v interpreter-data:/var/lib/interpreter interpreter-server
# The sandbox needs both flags: a cgroup per job, mounts and namespaces per job, loop devices
# (docs/containers.md says why each is needed, and why we recommend no narrower set). Without
# them the server refuses to start and names what is missing. `-e INTERPRETER_SANDBOX=none` runs
# without the sandbox and without the flags, for trusted code only: jobs then run as the server,
# with its environment, files, database and network (docs/containers.md).
# The same image runs the scale-out on PostgreSQL (docker-compose.yml, deploy/kubernetes/):
# API-only replicas (INTERPRETER_INPROCESS_WORKER=false) run no job and need neither the flags
# nor root, so they run as the image's `interpreter` user (`--user 10001:10001`); workers run
# `python -m interpreter.worker` with both flags.
FROM python:3.11-slim

# node runs javascript jobs. The sandbox: bubblewrap (the namespaces and mounts of each job),
# util-linux (setpriv: each job starts as a uid of its own), e2fsprogs (mkfs.ext4: the small
# filesystem under each job's working directory; the base image, Debian 13, lacks it).
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs bubblewrap util-linux e2fsprogs \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY interpreter/ ./interpreter/
RUN pip install --no-cache-dir '.[server]'

# The server runs as root (there is no USER): it makes a cgroup per job, mounts each job's
# filesystem (a loop device, ext4, an overlay) and switches each job to a uid of its own, which
# all need root. Jobs never run as root: each runs as an unprivileged uid of
# INTERPRETER_SANDBOX_UIDS, without capabilities, in namespaces of its own.
# The `interpreter` user is for processes that run no job (API-only replicas, `--user
# 10001:10001`): the data directory is writable by it, so that they can use the volume too.
RUN useradd --system --user-group --uid 10001 --create-home --home-dir /home/interpreter interpreter \
    && mkdir -p /var/lib/interpreter \
    && chown interpreter:interpreter /var/lib/interpreter

ENV INTERPRETER_HOST=0.0.0.0 \
    INTERPRETER_PORT=8000 \
    INTERPRETER_DATA_DIR=/var/lib/interpreter
VOLUME ["/var/lib/interpreter"]

# `python -m` puts the working directory first on sys.path: start from an empty directory that
# only root can write, so that the installed package is the one that runs and nothing in the
# data volume (or written by the `interpreter` user) can shadow it.
WORKDIR /srv/interpreter
EXPOSE 8000

# /health answers 503 when unhealthy, which urlopen raises as an error: the probe then exits 1.
# A worker serves no HTTP: its services replace this with `python -m interpreter.worker --check`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('INTERPRETER_PORT', '8000') + '/health', timeout=4)"]

CMD ["python", "-m", "interpreter.server"]
