"""The benchmark's baseline: FastAPI + one subprocess per request, no sandbox, no store.

``python bench/baseline_server.py PORT [INTERPRETER]``. ``POST /execute`` {code, language} runs
``INTERPRETER -c code`` and answers {status, stdout, stderr, exit_code} in the same request.
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

PYTHON = sys.argv[2] if len(sys.argv) > 2 else "/usr/bin/python3"
app = FastAPI()


class ExecuteRequest(BaseModel):
    code: str
    language: str = "python"


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "healthy"}


@app.post("/execute")
async def execute(body: ExecuteRequest) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-c", body.code,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return {
        "status": "completed" if proc.returncode == 0 else "failed",
        "stdout": out.decode(errors="replace"),
        "stderr": err.decode(errors="replace"),
        "exit_code": proc.returncode,
    }


if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]),
        loop="auto", http="auto", access_log=False, log_level="warning",
    )  # fmt: skip
