"""The Jupyter Kernel Gateway subset through a real server: a client that speaks to a Kernel
Gateway (REST for kernels, Jupyter messages as JSON frames on a websocket) works against ours,
behind the same API keys, with Jupyter's ``Authorization: token`` scheme. The module's server
also serves the sessions tests that need one beyond tests/acceptance/test_sessions.py: shell
sessions, and a session's files read through its executions' jobs."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.acceptance.server import ServerProcess, running_server
from tests.sandbox.usable import UNUSABLE

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.timeout(300),
    pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox: {UNUSABLE}"),
]

KEY_A = {"Authorization": "token key-a"}  # as Jupyter's gateway client sends it
KEY_B = {"Authorization": "token key-b"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path_factory.mktemp("gateway"), INTERPRETER_API_KEYS="key-a,key-b"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def kernel(server: ServerProcess) -> Iterator[dict[str, Any]]:
    client = server.client(headers=KEY_A, timeout=240)  # the first start installs ipykernel
    response = client.post("/api/kernels", json={"name": "python3", "env": {"GREETING": "hi"}})
    assert response.status_code == 201, response.text
    model: dict[str, Any] = response.json()
    yield model
    client.delete(f"/api/kernels/{model['id']}")


def channels(server: ServerProcess, kernel_id: str, headers: dict[str, str]) -> ClientConnection:
    url = server.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    return connect(url, additional_headers=headers, open_timeout=10)


def execute(ws: ClientConnection, code: str) -> list[dict[str, Any]]:
    """Send an execute_request as Jupyter clients build it; the frames answering it, until the
    kernel is idle again and its reply came."""
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": "test",
        "session": uuid.uuid4().hex,
        "date": "2026-12-07T00:00:00Z",
        "version": "5.3",
    }
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
    content |= {"allow_stdin": True, "stop_on_error": True}  # stdin is never offered
    frame = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
    ws.send(json.dumps({**frame, "channel": "shell", "buffers": []}))
    answers = []
    for _ in range(200):
        message = json.loads(ws.recv(timeout=30))
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        answers.append(message)
        # done once the kernel is idle again and its reply came: shell and iopub are two
        # channels, either may come first
        kinds = {(a["msg_type"], a["content"].get("execution_state")) for a in answers}
        if ("status", "idle") in kinds and ("execute_reply", None) in kinds:
            return answers
    raise AssertionError(f"no idle status and reply: {answers}")


def of_type(answers: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [a["content"] for a in answers if a["msg_type"] == kind]


def test_a_kernel_keeps_its_variables_and_answers_as_a_kernel_gateway_does(
    server: ServerProcess, kernel: dict[str, Any]
) -> None:
    assert kernel["name"] == "python3" and kernel["execution_state"] == "idle"
    with channels(server, kernel["id"], KEY_A) as ws:
        first = execute(ws, "import os\nx = 21\nprint(os.environ['GREETING'])")
        states = [a["execution_state"] for a in of_type(first, "status")]
        assert states == ["busy", "idle"], first
        assert of_type(first, "stream") == [{"name": "stdout", "text": "hi\n"}]
        assert of_type(first, "execute_reply")[0]["status"] == "ok"
        assert [a["channel"] for a in first if a["msg_type"] == "execute_reply"] == ["shell"]

        second = execute(ws, "x * 2")
        assert of_type(second, "execute_result")[0]["data"]["text/plain"] == "42"

        shown = execute(ws, "from IPython.display import HTML, display\ndisplay(HTML('<b>b</b>'))")
        assert of_type(shown, "display_data")[0]["data"]["text/html"] == "<b>b</b>"

        failed = execute(ws, "1/0")
        error = of_type(failed, "error")[0]
        assert error["ename"] == "ZeroDivisionError"
        assert "\x1b[" not in "\n".join(error["traceback"])

        asked = execute(ws, "input()")  # never waits for a stdin nobody answers
        assert of_type(asked, "error")[0]["ename"] == "StdinNotImplementedError"

        # the kernel refuses a shutdown sent over the channels: DELETE ends a kernel
        ws.send(
            json.dumps(
                {
                    "header": {"msg_id": "x", "msg_type": "shutdown_request"},
                    "channel": "control",
                    "content": {},
                }
            )
        )  # noqa: E501
        assert of_type(execute(ws, "x"), "execute_result")[0]["data"]["text/plain"] == "21"

    listed = server.client(headers=KEY_A).get("/api/kernels").json()
    assert [k["id"] for k in listed] == [kernel["id"]]


def test_another_key_and_no_key_cannot_reach_a_kernel(
    server: ServerProcess, kernel: dict[str, Any]
) -> None:
    # refused at the handshake as Kernel Gateway refuses: the HTTP status and a JSON detail
    for kernel_id, headers, status in (
        (kernel["id"], KEY_B, 404),
        (kernel["id"], {}, 401),
        ("no-such-kernel", KEY_A, 404),
    ):
        with pytest.raises(InvalidStatus) as refused:
            with channels(server, kernel_id, headers) as ws:
                ws.recv(timeout=5)
        response = refused.value.response
        assert response.status_code == status, kernel_id
        assert json.loads(response.body)["detail"], response.body
    other = server.client(headers=KEY_B)
    assert other.get("/api/kernels").json() == []
    assert other.get(f"/api/kernels/{kernel['id']}").status_code == 404
    assert other.delete(f"/api/kernels/{kernel['id']}").status_code == 404
    assert server.client().get("/api/kernels").status_code == 401
    # the owner's key in the query, as a browser's websocket sends it
    url = server.url.replace("http://", "ws://") + f"/api/kernels/{kernel['id']}/channels"
    with connect(f"{url}?token=key-a", open_timeout=10) as ws:
        answers = execute(ws, "1 + 1")
    assert of_type(answers, "execute_result")[0]["data"]["text/plain"] == "2"


def test_kernelspecs_and_a_kernel_deleted_is_gone(server: ServerProcess) -> None:
    client = server.client(headers=KEY_A, timeout=240)
    specs = client.get("/api/kernelspecs").json()
    assert specs["default"] == "python3" and "python3" in specs["kernelspecs"]
    assert client.post("/api/kernels", json={"name": "ruby"}).status_code == 422

    made = client.post("/api/kernels", json={}).json()
    assert client.post(f"/api/kernels/{made['id']}/interrupt").status_code == 204
    assert client.delete(f"/api/kernels/{made['id']}").status_code == 204
    gone = client.get(f"/api/kernels/{made['id']}")
    assert gone.status_code == 404 and "restarts" in gone.json()["detail"]
    with pytest.raises(InvalidStatus):
        with channels(server, made["id"], KEY_A) as ws:
            ws.recv(timeout=5)


def test_a_session_refuses_its_own_executions_while_a_websocket_client_is_attached(
    server: ServerProcess, kernel: dict[str, Any]
) -> None:
    client = server.client(headers=KEY_A, timeout=60)
    with channels(server, kernel["id"], KEY_A) as ws:
        execute(ws, "y = 5")
        refused = client.post(f"/sessions/{kernel['id']}/execute", json={"code": "y"})
        assert refused.status_code == 409 and "websocket" in refused.json()["detail"]
        assert client.get(f"/api/kernels/{kernel['id']}").json()["connections"] == 1
    done = client.post(f"/sessions/{kernel['id']}/execute", json={"code": "y"}).json()
    assert done["status"] == "completed" and done["results"][0]["data"]["text/plain"] == "5"


def test_a_restart_ends_a_websocket_clients_connection(
    server: ServerProcess, kernel: dict[str, Any]
) -> None:
    client = server.client(headers=KEY_A, timeout=60)
    with channels(server, kernel["id"], KEY_A) as ws:
        execute(ws, "z = 1")
        restarted = client.post(f"/api/kernels/{kernel['id']}/restart")  # never waits on it
        assert restarted.status_code == 200, restarted.text
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(100):
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    with channels(server, kernel["id"], KEY_A) as ws:
        assert of_type(execute(ws, "z"), "error")[0]["ename"] == "NameError"


def test_deleting_a_session_while_its_cell_runs_cancels_the_cell_and_the_server_runs_on(
    server: ServerProcess,
) -> None:
    client = server.client(headers=KEY_A, timeout=240)
    for _ in range(3):  # each once cost the server a job worker for good
        session_id = client.post("/sessions", json={}).json()["session_id"]
        started = client.post(
            f"/sessions/{session_id}/execute",
            params={"wait": 0},
            json={"code": "import time\ntime.sleep(60)"},
        ).json()
        job = started["job_id"]
        for _ in range(200):
            if client.get(f"/jobs/{job}/status").json()["status"] == "running":
                break
            time.sleep(0.05)
        assert client.delete(f"/sessions/{session_id}").status_code == 200
        ended = client.get(f"/jobs/{job}/status", params={"wait": 20}).json()
        assert ended["status"] == "failed", ended
        # ended in the cell, or (deleted at once) before the kernel ran it
        assert ended["error_message"] in (
            "the session ended while the cell ran: deleted",
            "the session ended before the cell ran: deleted",
        ), ended
    assert client.get("/health").json()["status"] == "healthy"
    plain = client.post("/execute", params={"wait": 30}, json={"code": "print(1)"}).json()
    assert plain["status"] == "completed"


def test_a_session_deleted_while_it_starts_leaves_no_kernel(server: ServerProcess) -> None:
    client = server.client(headers=KEY_A, timeout=240)
    kernels_before = len(_kernels(server))
    sessions_before = [s["session_id"] for s in client.get("/sessions").json()["sessions"]]
    answers: list[httpx.Response] = []
    starting = threading.Thread(target=lambda: answers.append(client.post("/sessions", json={})))
    starting.start()
    deleted = False
    give_up = time.monotonic() + 30
    while starting.is_alive() and not deleted and time.monotonic() < give_up:
        for listed in client.get("/sessions").json()["sessions"]:
            if listed["status"] == "starting":
                deleted = client.delete(f"/sessions/{listed['session_id']}").status_code == 200
        time.sleep(0.01)
    starting.join(60)
    assert deleted, "the session was never seen starting"
    assert answers[0].status_code == 404, answers[0].text  # it ended before it was ready
    while len(_kernels(server)) > kernels_before:
        assert time.monotonic() < give_up + 15, "a kernel outlived its session's start"
        time.sleep(0.2)
    listed = [s["session_id"] for s in client.get("/sessions").json()["sessions"]]
    assert listed == sessions_before


def _kernels(server: ServerProcess) -> list[Any]:
    found = []
    for proc in server.descendants():
        try:
            if "ipykernel_launcher" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_a_shell_session_keeps_its_directory_and_exported_variables(
    server: ServerProcess,
) -> None:
    """Shell sessions ride on the same machinery (bash_kernel): a bash behind a terminal."""
    client = server.client(headers=KEY_A, timeout=240)
    made = client.post("/sessions", json={"language": "bash"})
    assert made.status_code == 201, made.text
    session_id = made.json()["session_id"]
    assert made.json()["language"] == "shell"

    def run(code: str) -> dict[str, Any]:
        answer: dict[str, Any] = client.post(
            f"/sessions/{session_id}/execute", json={"code": code, "timeout": 20}
        ).json()
        return answer

    try:
        first = run("mkdir -p sub && cd sub && export COLOUR=blue && echo set")
        assert (first["status"], first["stdout"]) == ("completed", "set\n"), first
        second = run('echo "$COLOUR in ${PWD##*/}"')
        assert second["stdout"] == "blue in sub\n", second
        failed = run("ls /nowhere")
        assert failed["status"] == "failed" and failed["exit_code"] == 2, failed
        assert "No such file or directory" in failed["stdout"]  # one terminal: one stream
        assert (
            client.post("/sessions", json={"language": "bash", "packages": ["six"]}).status_code
            == 422
        )
    finally:
        client.delete(f"/sessions/{session_id}")


def test_a_session_executions_job_serves_the_sessions_files_while_it_runs(
    server: ServerProcess,
) -> None:
    client = server.client(headers=KEY_A, timeout=240)
    session_id = client.post("/sessions", json={}).json()["session_id"]
    try:
        code = (
            "import os\nos.makedirs('out', exist_ok=True)\n"
            "open('out/table.csv', 'w').write('a,b\\n1,2\\n')\nos.symlink('/etc/passwd', 'link')"
        )
        ran = client.post(f"/sessions/{session_id}/execute", json={"code": code}).json()
        assert ran["status"] == "completed", ran
        job = ran["job_id"]
        listed = client.get(f"/jobs/{job}/files").json()
        assert [f["path"] for f in listed["files"]] == ["out/table.csv"]
        assert [s["path"] for s in listed["skipped"]] == ["link"]  # never followed
        assert client.get(f"/jobs/{job}/files/out/table.csv").text == "a,b\n1,2\n"
        assert client.get(f"/jobs/{job}/files/link").status_code == 404
        # a later execution's change shows through an earlier job: the session's directory now
        client.post(f"/sessions/{session_id}/execute", json={"code": "os.remove('out/table.csv')"})
        assert client.get(f"/jobs/{job}/files/out/table.csv").status_code == 404
        assert server.client(headers=KEY_B).get(f"/jobs/{job}/files").status_code == 404
    finally:
        client.delete(f"/sessions/{session_id}")
    gone = client.get(f"/jobs/{job}/files").json()
    assert gone["files"] == [] and gone["source"] == "none"


def test_a_session_past_its_lifetime_is_reaped_while_in_use(server: ServerProcess) -> None:
    """Idle reaping is tests/acceptance/test_sessions.py's; a lifetime ends a session that is
    used all along."""
    client = server.client(headers=KEY_A, timeout=240)
    made = client.post("/sessions", json={"max_lifetime_s": 4, "idle_timeout_s": 600})
    assert made.status_code == 201, made.text
    session_id = made.json()["session_id"]
    give_up = time.monotonic() + 20
    while (answer := client.post(f"/sessions/{session_id}/execute", json={"code": "1"})).is_success:
        assert time.monotonic() < give_up, "the session outlived its lifetime"
        time.sleep(0.5)
    assert answer.status_code == 404 and "too old" in answer.json()["detail"], answer.text
    assert client.get(f"/sessions/{session_id}").status_code == 404
