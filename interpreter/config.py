"""Settings from ``INTERPRETER_*`` environment variables, built once at the entry point."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "interpreter"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the server. Constructor arguments override the environment."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_jobs: int = Field(10, ge=1, le=1024, description="jobs running at once")
    log_level: str = "INFO"

    data_dir: Path = Field(default_factory=_default_data_dir)
    workspace_root: Path | None = None  # default: <data_dir>/workspaces

    default_timeout_s: float = Field(30.0, gt=0, alias="INTERPRETER_DEFAULT_TIMEOUT")
    max_timeout_s: float = Field(300.0, gt=0, alias="INTERPRETER_MAX_TIMEOUT")
    kill_grace_s: float = Field(1.0, ge=0)
    max_output_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_code_bytes: int = Field(1024 * 1024, ge=1)
    max_stdin_bytes: int = Field(1024 * 1024, ge=0)
    max_pending_jobs: int = Field(10_000, ge=1)
    file_scan_max_entries: int = Field(100_000, ge=1)
    file_scan_max_seconds: float = Field(5.0, gt=0)
    # Scale-out: what a worker copies of a finished job's directory into the database, per job.
    max_captured_bytes: int = Field(64 * 2**20, ge=0, le=2**29)  # bytea holds < 1 GiB
    max_captured_files: int = Field(1_000, ge=0)

    job_ttl_s: float = Field(24 * 3600.0, gt=0, alias="INTERPRETER_JOB_TTL")
    cleanup_interval_s: float = Field(60.0, gt=0)
    shutdown_grace_s: float = Field(10.0, ge=0)

    job_path: str = "/usr/local/bin:/usr/bin:/bin"
    python_command: str | None = None  # default: the first of /usr/bin/python3, python3 on PATH
    node_command: str | None = None
    bash_command: str | None = None
    languages_json: str | None = Field(None, alias="INTERPRETER_LANGUAGES")

    # Left unset, authentication is on exactly when keys are given (see ``authentication``).
    enable_authentication: bool = Field(False, alias="INTERPRETER_AUTH")
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_keys_file: Path | None = None
    enable_cors: bool = Field(False, alias="INTERPRETER_CORS")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # -- where jobs live and who runs them (scale-out on PostgreSQL) ----------------------------
    database_url: str | None = Field(
        None, description="sqlite:///path (default: <data_dir>/jobs.sqlite3) or postgresql://..."
    )
    apply_schema: bool = True  # create the tables (and procrastinate's) at start when missing
    inprocess_worker: bool = True  # PostgreSQL: this API process also runs jobs
    worker_concurrency: int | None = Field(None, ge=1, le=1024)  # default: INTERPRETER_MAX_JOBS
    worker_name: str | None = None  # default: <host>:<pid>
    worker_heartbeat_s: float = Field(2.0, gt=0, alias="INTERPRETER_WORKER_HEARTBEAT")
    worker_lost_after_s: float = Field(10.0, gt=0, alias="INTERPRETER_WORKER_LOST_AFTER")
    worker_lost_reruns: int = Field(1, ge=0)  # a job whose worker died runs again this many times
    database_pool_size: int = Field(10, ge=1, le=200)
    # How long a statement waits for a pooled connection before it fails (and is retried: a
    # worker retries until the database answers, an API answers 503 meanwhile).
    database_timeout_s: float = Field(30.0, gt=0, alias="INTERPRETER_DATABASE_TIMEOUT")

    # -- abuse of the API (rate limits, caps) ---------------------------------------------------
    # auto: none without authentication, 1000/second per key with it (see api/ratelimit.py)
    rate_limit: str = Field(
        "auto", description="POST /execute per API key (per client address without auth)"
    )
    rate_limit_storage: str = "memory://"  # a `limits` storage URI, e.g. redis://127.0.0.1:6379
    max_pending_per_key: int = Field(1_000, ge=1)
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    # Input files of POST /execute: a multipart body may be this large (a JSON one stays within
    # INTERPRETER_MAX_BODY_BYTES), and a job's files may total this much, each at most
    # INTERPRETER_MAX_INPUT_FILE_BYTES, at most INTERPRETER_MAX_INPUT_FILES of them.
    max_upload_bytes: int = Field(64 * 2**20, ge=1024)
    max_input_file_bytes: int = Field(64 * 2**20, ge=0)
    max_input_files: int = Field(100, ge=0, le=100_000)

    # -- the sandbox and per-job limits (each: a default, and the maximum a request may ask) ----
    sandbox: Literal["bwrap", "none"] = "bwrap"
    cpu_time_limit_s: float = Field(60.0, gt=0, alias="INTERPRETER_CPU_TIME_LIMIT")
    max_cpu_time_limit_s: float = Field(600.0, gt=0, alias="INTERPRETER_MAX_CPU_TIME_LIMIT")
    memory_limit_bytes: int = Field(512 * 2**20, ge=16 * 2**20, alias="INTERPRETER_MEMORY_LIMIT")
    max_memory_limit_bytes: int = Field(
        4 * 2**30, ge=16 * 2**20, alias="INTERPRETER_MAX_MEMORY_LIMIT"
    )
    # At least 3 tasks: the sandbox's own 2 (bubblewrap and its pid 1) and the job's process.
    process_limit: int = Field(128, ge=3, alias="INTERPRETER_PROCESS_LIMIT")
    max_process_limit: int = Field(1024, ge=3, alias="INTERPRETER_MAX_PROCESS_LIMIT")
    file_size_limit_bytes: int = Field(256 * 2**20, ge=2**20, alias="INTERPRETER_FILE_SIZE_LIMIT")
    max_file_size_limit_bytes: int = Field(
        4 * 2**30, ge=2**20, alias="INTERPRETER_MAX_FILE_SIZE_LIMIT"
    )
    open_files_limit: int = Field(256, ge=16, alias="INTERPRETER_OPEN_FILES_LIMIT")
    max_open_files_limit: int = Field(4096, ge=16, alias="INTERPRETER_MAX_OPEN_FILES_LIMIT")
    workspace_limit_bytes: int = Field(1 * 2**30, ge=2**20, alias="INTERPRETER_WORKSPACE_LIMIT")
    max_workspace_limit_bytes: int = Field(
        8 * 2**30, ge=2**20, alias="INTERPRETER_MAX_WORKSPACE_LIMIT"
    )
    tmp_limit_bytes: int = Field(64 * 2**20, ge=2**20, alias="INTERPRETER_TMP_LIMIT")
    # Files, directories and links a job may make in its working directory (the inode count of
    # the filesystem it writes to), set by the server only.
    workspace_files_limit: int = Field(
        200_000, ge=64, le=4_000_000, alias="INTERPRETER_WORKSPACE_FILES"
    )
    cgroup_parent: str | None = None  # jobs' cgroups go under it; default <own>/interpreter-jobs
    # Host uids jobs run as, one per running job, "first-last"; never 0 or the server's own.
    sandbox_uids: str = Field("2000000000-2000065535", pattern=r"^\d+-\d+$")
    # Machine-wide: the uid locks every server and worker here shares, and each data directory's
    # mount points and /etc for its jobs. Root-owned, searchable, never writable by jobs.
    sandbox_run_dir: Path = Path("/run/interpreter")
    # Python jobs forked from warm, already sandboxed parents (interpreter/sandbox/warm.py); the
    # first uid of INTERPRETER_SANDBOX_UIDS is then the parents' own, never a job's.
    warm_pool: bool = True
    warm_pool_recycle: int = Field(1000, ge=1, le=1_000_000)  # jobs a parent starts, then replaced
    # -- sessions: sandboxed Python kernels that keep state (interpreter/sessions) ---------------
    sessions: bool = True
    max_sessions: int = Field(16, ge=0, le=10_000)  # on this server at once
    max_sessions_per_key: int = Field(4, ge=1, le=10_000)
    # idle: ended after this long without an execution; lifetime: ended this long after it began
    # (defaults, and the most a request may ask for)
    session_idle_timeout_s: float = Field(600.0, gt=0, alias="INTERPRETER_SESSION_IDLE_TIMEOUT")
    session_max_idle_timeout_s: float = Field(
        3600.0, gt=0, alias="INTERPRETER_SESSION_MAX_IDLE_TIMEOUT"
    )
    session_lifetime_s: float = Field(3600.0, gt=0, alias="INTERPRETER_SESSION_LIFETIME")
    session_max_lifetime_s: float = Field(86400.0, gt=0, alias="INTERPRETER_SESSION_MAX_LIFETIME")
    # the kernel's own requirement, installed with the session's packages
    session_kernel_requirement: str = "ipykernel>=6.29"

    # -- per-job Python packages (interpreter/packages) -----------------------------------------
    # Requirements every Python job that names none runs with ("numpy pandas matplotlib")
    default_packages: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_packages: int = Field(32, ge=0, le=256)  # requirements one request may name
    packages_index_url: str | None = None  # default: PyPI (uv's own default)
    packages_resolve_timeout_s: float = Field(
        60.0, gt=0, alias="INTERPRETER_PACKAGES_RESOLVE_TIMEOUT"
    )
    packages_install_timeout_s: float = Field(
        300.0, gt=0, alias="INTERPRETER_PACKAGES_INSTALL_TIMEOUT"
    )
    # A request's resolution is reused this long (a repeat asks the registry nothing)
    packages_lock_ttl_s: float = Field(24 * 3600.0, ge=0, alias="INTERPRETER_PACKAGES_LOCK_TTL")
    packages_max_env_bytes: int = Field(4 * 2**30, ge=2**20)  # one environment, installed
    # Environments and the download cache together; the least recently used unused environments
    # go first when a build passes it
    packages_cache_bytes: int = Field(20 * 2**30, ge=2**20)

    _split_keys = field_validator("api_keys", "cors_origins", mode="before")(_split_csv)

    @field_validator("default_packages", mode="before")
    @classmethod
    def _split_packages(cls, value: Any) -> Any:
        """Requirements separated by whitespace (each written without spaces: numpy>=2,<3)."""
        if isinstance(value, str):
            return value.split()
        return value

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError("INTERPRETER_DEFAULT_TIMEOUT must not exceed INTERPRETER_MAX_TIMEOUT")
        if self.database_url is not None and self.database_kind == "unknown":
            raise ValueError(
                "INTERPRETER_DATABASE_URL must start with sqlite:/// or postgresql://; "
                f"got {self.database_url.split('://')[0]}://..."
            )
        if self.worker_lost_after_s <= self.worker_heartbeat_s:
            raise ValueError(
                "INTERPRETER_WORKER_LOST_AFTER must be longer than INTERPRETER_WORKER_HEARTBEAT"
            )
        first, last = self.sandbox_uid_range
        if not 0 < first <= last < 2**32 - 1:
            raise ValueError(
                "INTERPRETER_SANDBOX_UIDS must be first-last with 0 < first <= last < 4294967295; "
                f"got {self.sandbox_uids}"
            )
        return self

    model_config = SettingsConfigDict(
        env_prefix="INTERPRETER_", extra="ignore", populate_by_name=True
    )

    @property
    def workspaces(self) -> Path:
        return self.workspace_root or self.data_dir / "workspaces"

    @property
    def database_kind(self) -> Literal["sqlite", "postgresql", "unknown"]:
        url = self.database_url
        if url is None or url.startswith("sqlite:///"):
            return "sqlite"
        if url.split("://")[0] in ("postgresql", "postgres", "postgresql+psycopg"):
            return "postgresql"
        return "unknown"

    @property
    def database_path(self) -> Path:
        """The SQLite file (embedded mode)."""
        url = self.database_url
        if url is not None and url.startswith("sqlite:///"):
            return Path(url.removeprefix("sqlite:///"))
        return self.data_dir / "jobs.sqlite3"

    @property
    def postgres_dsn(self) -> str:
        """The libpq form of INTERPRETER_DATABASE_URL (psycopg and procrastinate take it), with
        a ``connect_timeout`` (INTERPRETER_DATABASE_TIMEOUT, at least libpq's 2 s) unless the URL
        sets one: a database that accepts connections but never answers fails a connection
        attempt in that time rather than hanging it."""
        assert self.database_url is not None
        scheme, _, rest = self.database_url.partition("://")
        if "connect_timeout=" not in rest:
            seconds = max(2, math.ceil(self.database_timeout_s))
            rest += f"{'&' if '?' in rest else '?'}connect_timeout={seconds}"
        return f"postgresql://{rest}"

    @property
    def concurrency(self) -> int:
        """Jobs one worker process runs at once."""
        return self.worker_concurrency or self.max_jobs

    @property
    def sandbox_uid_range(self) -> tuple[int, int]:
        first, _, last = self.sandbox_uids.partition("-")
        return int(first), int(last)

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def scratch_dir(self) -> Path:
        return self.data_dir / "scratch"

    @property
    def api_keys_given(self) -> bool:
        """INTERPRETER_API_KEYS or INTERPRETER_API_KEYS_FILE is set (even to nothing)."""
        return "api_keys" in self.model_fields_set or self.api_keys_file is not None

    @property
    def authentication(self) -> bool:
        """Whether requests need an API key: INTERPRETER_AUTH when it is set, else whether keys
        are given. Keys with INTERPRETER_AUTH=false is refused at start (``create_app``)."""
        if "enable_authentication" in self.model_fields_set:
            return self.enable_authentication
        return self.api_keys_given

    def all_api_keys(self) -> list[str]:
        """Keys from INTERPRETER_API_KEYS and from INTERPRETER_API_KEYS_FILE (one per line)."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            text = self.api_keys_file.read_text()
            keys += [
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.startswith("#")
            ]
        return keys
