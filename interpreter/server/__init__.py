"""Run the server: ``python -m interpreter.server`` or ``EnhancedInterpreterServer(...).run()``."""

from __future__ import annotations

import logging
import sys
from typing import Any

from interpreter.extras import require_server_extra

try:
    import uvicorn
    from pydantic import ValidationError

    from interpreter.api.app import create_app
    from interpreter.config import Settings
    from interpreter.errors import ConfigurationError
    from interpreter.logs import configure as configure_logging
except ModuleNotFoundError as exc:  # no `server` extra: say so in one line
    require_server_extra(exc, __name__)
    raise

__all__ = ["EnhancedInterpreterServer", "main"]

logger = logging.getLogger(__name__)


class EnhancedInterpreterServer:
    """The server. Arguments left as None come from ``INTERPRETER_*`` environment variables;
    arguments given override them. Extra keyword arguments are any other ``Settings`` field."""

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        max_concurrent_jobs: int | None = None,
        enable_authentication: bool | None = None,
        enable_cors: bool | None = None,
        **settings: Any,
    ) -> None:
        overrides = {
            "host": host,
            "port": port,
            "max_jobs": max_concurrent_jobs,
            "enable_authentication": enable_authentication,
            "enable_cors": enable_cors,
            **settings,
        }
        try:
            self.settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc)) from exc
        configure_logging(self.settings.log_level)
        self.app = create_app(self.settings)  # refuses bad settings now, not at the first request

    def run(self) -> None:
        config = uvicorn.Config(
            self.app,
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            access_log=False,
            loop="auto",
            http="auto",
            timeout_graceful_shutdown=int(self.settings.shutdown_grace_s) + 5,
        )
        uvicorn.Server(config).run()


def _describe(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
        for err in exc.errors()
    )
    return f"invalid configuration: {problems}"


def main(argv: list[str] | None = None) -> int:
    try:
        EnhancedInterpreterServer().run()
    except ConfigurationError as exc:
        print(f"interpreter.server: refusing to start: {exc.message}", file=sys.stderr)
        return 2
    return 0
