"""The framework adapters on the scale-out: an API replica and a worker, each with a workspace
root of its own (a named working directory is opened beneath the worker's); the Deep Agents
sandbox reads its files back from the copy the worker captured into PostgreSQL."""

from __future__ import annotations

from interpreter.integrations.deepagents import InterpreterSandbox
from interpreter.integrations.openai_agents import InterpreterShellExecutor
from tests.client.test_integrations import PAYLOAD, shell_call
from tests.scaleout.conftest import Cluster


async def test_adapters_through_an_api_replica_and_a_worker(cluster: Cluster) -> None:
    api_root, worker_root = (str(cluster.directory / name) for name in ("api-root", "worker-root"))
    api = cluster.api(INTERPRETER_RATE_LIMIT="off", INTERPRETER_WORKSPACE_ROOT=api_root)
    cluster.worker(INTERPRETER_WORKSPACE_ROOT=worker_root)
    cluster.wait_workers(1)

    with InterpreterSandbox(api.url) as sandbox:
        workdir = sandbox.workdir
        uploads = sandbox.upload_files([(f"{workdir}/in/blob.bin", PAYLOAD)])
        assert [u.error for u in uploads] == [None]
        response = sandbox.execute("cp in/blob.bin out.bin && echo copied >&2")
        assert (response.output, response.exit_code) == ("copied\n", 0)
        assert sandbox.execute("sleep 30", timeout=1).exit_code == 124
        downloads = sandbox.download_files([f"{workdir}/out.bin", "in", "missing"])
        assert [(d.content, d.error) for d in downloads] == [
            (PAYLOAD, None),
            (None, "is_directory"),
            (None, "file_not_found"),
        ]
        written = sandbox.write(f"{workdir}/notes.txt", "hello")
        assert written.error is None
        read = sandbox.read(f"{workdir}/notes.txt")
        assert read.file_data is not None and read.file_data["content"] == "hello"

    executor = InterpreterShellExecutor(api.url)
    first = await executor(shell_call("echo kept > f.txt", "sleep 30", timeout_ms=1000))
    assert [o.outcome.type for o in first.output] == ["exit", "timeout"]
    second = await executor(shell_call("cat f.txt"))
    assert second.output[0].stdout == "kept\n"
