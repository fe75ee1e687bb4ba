"""The local channel's HTTP API (/v1/chat) and `pynchy chat`, against a real gateway on the real API
server. The test plays the agent pod over the run API, so turns end exactly when it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.gateway_helpers import agent, finish_turn, make_run, token_for, wait_gateway_sees
from cluster.helpers import apply, group, wait_for
from conftest import make_gateway
from pynchy.gateway.main import EmbeddedGateway
from pynchy.kube.controlplane import ControlPlane
from pynchy.store import outbound
from pynchy.store import turns as turn_store

CHAT_TOKEN = "local-chat-token-for-tests-0123456789"


def start_gateway(kubeconfig: Path, data_dir: Path, **overrides: Any) -> EmbeddedGateway:
    settings: dict[str, Any] = {"long_poll_seconds": 30, "chat_token": CHAT_TOKEN} | overrides
    return make_gateway(kubeconfig, data_dir, "http://127.0.0.1:9", "sk-test", **settings).start()  # type: ignore[attr-defined]


@pytest.fixture
def gateway(gateway_kubeconfig: Path, tmp_path: Path, namespace: str) -> Iterator[EmbeddedGateway]:
    # Only the test's namespace: a Group of the same name in an earlier test's (terminating) namespace
    # would claim the same channel.
    gw = start_gateway(gateway_kubeconfig, tmp_path, namespaces=[namespace])
    try:
        yield gw
    finally:
        gw.stop()


def chat_client(gw: EmbeddedGateway, token: str | None = CHAT_TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=gw.url + "/v1/chat", headers=headers, timeout=60)


def setup_group(plane: ControlPlane, ns: str, gw: EmbeddedGateway, name: str, channel: str | None = None) -> None:
    channel = channel or name
    apply(plane, ns, group(name, channels=[{"local": {"name": channel}}]))
    assert gw.gateway is not None
    directory = gw.gateway.directory
    wait_for(lambda: directory.lookup("local", channel), what=f"the gateway routes local channel {channel}")


def with_run(plane: ControlPlane, ns: str, gw: EmbeddedGateway, group: str) -> httpx.Client:
    """A live run of the Group (so no AgentRun is created for it) and the pod's run API client."""
    run = make_run(plane, ns, f"{group}-run", group)
    wait_gateway_sees(gw, ns, "run", f"{group}-run")
    return agent(gw, token_for(run, group))


def post(chat: httpx.Client, channel: str, text: str, mid: str) -> httpx.Response:
    return chat.post(f"/{channel}/messages", json={"text": text, "clientMessageId": mid})


def in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run `fn` in a thread now; the returned function joins it and gives its result (or raises)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()

    def join() -> Any:
        t.join(90)
        assert not t.is_alive(), "the background call did not finish"
        if "error" in box:
            raise box["error"]
        return box["value"]

    return join


def read_stream(
    chat: httpx.Client, channel: str, turn: str, connected: threading.Event | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Every line of a turn's event stream; `connected` is set once the header line is in."""
    lines = []
    with chat.stream("GET", f"/{channel}/turns/{turn}/events", params=params) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        for line in r.iter_lines():
            if line.strip():
                lines.append(json.loads(line))
                if connected is not None:
                    connected.set()
    return lines


def stream_in_thread(gw: EmbeddedGateway, channel: str, turn: str) -> Callable[[], list[dict[str, Any]]]:
    """Start reading a turn's events in a thread; returns once the stream is open."""
    connected = threading.Event()
    join = in_thread(lambda: read_stream(chat_client(gw), channel, turn, connected))
    assert connected.wait(30), "the event stream did not open"
    return join


def next_turn(pod: httpx.Client) -> dict[str, Any]:
    r = pod.get("/v1/run/turns/next", params={"wait": 30})
    assert r.status_code == 200, r.text
    return r.json()


# -- authentication, routing, bad requests ---------------------------------------------------


def test_token_channel_and_request_errors_are_clear(
    control_plane: ControlPlane, namespace: str, gateway: EmbeddedGateway
) -> None:
    setup_group(control_plane, namespace, gateway, "errs", channel="errs-chat")

    r = chat_client(gateway, token=None).get("/errs-chat")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "missing token" in r.json()["error"]
    assert "PYNCHY_CHAT_TOKEN" in r.json()["error"]
    r = chat_client(gateway, token="not-the-token").post("/errs-chat/messages", json={"text": "x"})
    assert r.status_code == 401
    assert "wrong token" in r.json()["error"]
    assert "PYNCHY_CHAT_TOKEN" in r.json()["error"]

    chat = chat_client(gateway)
    r = chat.get("/nowhere")
    assert r.status_code == 404
    assert "no local channel 'nowhere'" in r.json()["error"]
    assert "errs-chat" in r.json()["error"]  # says which exist
    assert post(chat, "nowhere", "hi", "m1").status_code == 404

    listed = chat.get("").json()["channels"]
    assert {"channel": "errs-chat", "namespace": namespace, "group": "errs"} in listed
    info = chat.get("/errs-chat").json()
    assert info == {
        "channel": "errs-chat",
        "namespace": namespace,
        "group": "errs",
        "cursor": 0,
        "maxTextChars": 100_000,
    }

    r = chat.post("/errs-chat/messages", json={"text": "hi"})
    assert r.status_code == 422
    assert r.json()["error"] == "invalid message: clientMessageId: Field required"
    r = chat.post("/errs-chat/messages", json={"text": "hi", "clientMessageId": "m1", "to": "x"})
    assert r.status_code == 422
    assert "to: Extra inputs are not permitted" in r.json()["error"]
    r = chat.post("/errs-chat/messages", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    r = post(chat, "errs-chat", "x" * 100_001, "m-big")
    assert r.status_code == 413
    assert "100001 characters" in r.json()["error"]
    assert "at most 100000" in r.json()["error"]
    r = chat.post("/errs-chat/messages", content=b"x" * (2 << 20), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = chat.get("/errs-chat/messages", params={"after": "-3"})
    assert r.status_code == 422
    assert r.json()["error"].startswith("invalid query: after")
    r = chat.get("/errs-chat/turns/nope/events")
    assert r.status_code == 404
    assert "no turn 'nope' in local channel 'errs-chat'" in r.json()["error"]
    # The gateway kept serving through all of that.
    assert chat.get("/errs-chat").status_code == 200


def test_without_a_chat_token_the_channel_says_it_is_disabled(gateway_kubeconfig: Path, tmp_path: Path) -> None:
    gw = start_gateway(gateway_kubeconfig, tmp_path, chat_token=None)
    try:
        r = chat_client(gw).get("/demo")
        assert r.status_code == 503
        assert r.json()["error"].startswith("the local channel is disabled: set PYNCHY_CHAT_TOKEN")
    finally:
        gw.stop()


# -- a message, its turn, its events ---------------------------------------------------------


def test_a_message_becomes_one_turn_whose_events_stream(
    control_plane: ControlPlane, namespace: str, gateway: EmbeddedGateway, gateway_kubeconfig: Path, tmp_path: Path
) -> None:
    setup_group(control_plane, namespace, gateway, "talk")
    pod = with_run(control_plane, namespace, gateway, "talk")
    chat = chat_client(gateway)

    first = post(chat, "talk", "hello there", "msg-0001")
    assert first.status_code == 200, first.text
    accepted = first.json()
    assert accepted["outcome"] == "queued"
    assert (accepted["namespace"], accepted["group"]) == (namespace, "talk")
    turn = accepted["turnId"]
    # The same client message id again (a retry after a lost answer): the same turn, nothing new.
    again = post(chat, "talk", "hello there", "msg-0001").json()
    assert again["outcome"] == "duplicate"
    assert again["turnId"] == turn
    gw = gateway.gateway
    assert gw is not None
    assert len(gateway.call(gw.db.call(turn_store.open_turns, namespace, "talk"))) == 1

    # A client streams before the agent has even seen the turn...
    streamed = stream_in_thread(gateway, "talk", turn)
    delivered = next_turn(pod)
    assert (delivered["id"], delivered["prompt"], delivered["sender"]) == (turn, "hello there", "owner")
    # ...and one that connects after the agent started still gets every event from the beginning.
    r = pod.post(f"/v1/run/turns/{turn}/events", json={"events": [{"type": "tool_use", "name": "Read"}]})
    assert r.status_code == 204
    late = stream_in_thread(gateway, "talk", turn)
    finish_turn(pod, turn, "hi, owner")

    lines = streamed()
    assert lines[0]["type"] == "stream"
    assert lines[0]["turn"] == turn
    assert lines[0]["state"] == "queued"
    assert [e["type"] for e in lines[1:]] == ["status", "tool_use", "text_delta", "text_delta", "result"]
    assert lines[1]["attempt"] == 1
    assert "".join(e["text"] for e in lines if e["type"] == "text_delta") == "hi, owner"
    assert lines[-1]["text"] == "hi, owner"
    assert late()[1:] == lines[1:]

    # A finished turn answers at once; a reconnect resumes after what it read.
    again_lines = read_stream(chat, "talk", turn)
    assert again_lines[0]["state"] == "done"
    assert again_lines[1:] == lines[1:]
    resumed = read_stream(chat, "talk", turn, stream=lines[0]["stream"], **{"from": 3})
    assert [e["type"] for e in resumed] == ["stream", "text_delta", "result"]

    # The reply is in the channel's messages too (a client that was away reads it there).
    batch = chat.get("/talk/messages", params={"after": 0, "wait": 10}).json()
    [reply] = batch["messages"]
    assert (reply["kind"], reply["key"], reply["turnId"], reply["text"]) == (
        "reply",
        f"turn:{turn}:0",
        turn,
        "hi, owner",
    )
    assert batch["cursor"] == reply["id"]
    assert chat.get("/talk").json()["cursor"] == reply["id"]

    # Another gateway process over the same store (a restart): the finished turn comes from the store.
    gateway.stop()
    restarted = start_gateway(gateway_kubeconfig, tmp_path, namespaces=[namespace])
    try:
        setup_group(control_plane, namespace, restarted, "talk")
        fresh = chat_client(restarted)
        from_store = read_stream(fresh, "talk", turn, stream=lines[0]["stream"], **{"from": 5})
        assert from_store[0]["state"] == "done"
        assert from_store[0]["stream"] != lines[0]["stream"]  # a new stream: read from its start
        assert [(e["type"], e["text"]) for e in from_store[1:]] == [("result", "hi, owner")]
        assert post(fresh, "talk", "hello there", "msg-0001").json() == again  # dedupe survives the restart
    finally:
        restarted.stop()


def test_commands_are_answered_in_the_response_and_stop_ends_a_waiting_stream(
    control_plane: ControlPlane, namespace: str, gateway: EmbeddedGateway
) -> None:
    setup_group(control_plane, namespace, gateway, "cmds")
    with_run(control_plane, namespace, gateway, "cmds")
    chat = chat_client(gateway)

    queued = post(chat, "cmds", "a long job", "job-1").json()
    assert queued["outcome"] == "queued"
    pending = post(chat, "cmds", "pending", "cmd-1").json()
    assert pending["outcome"] == "command"
    assert "queued: a long job" in pending["reply"]
    # A retried command gets the same answer (from the ledger), and is not run again.
    assert post(chat, "cmds", "pending", "cmd-1").json() == pending | {"outcome": "duplicate"}

    stream = stream_in_thread(gateway, "cmds", queued["turnId"])
    stopped = post(chat, "cmds", "stop", "cmd-2").json()
    assert stopped["outcome"] == "command"
    lines = stream()
    assert lines[-1]["type"] == "error"
    assert "stopped by owner" in lines[-1]["message"]
    kinds = [(m["kind"], m["key"]) for m in chat.get("/cmds/messages").json()["messages"]]
    assert ("command", "cmd:local:cmd-1") in kinds
    assert ("command", "cmd:local:cmd-2") in kinds


# -- messages that come on their own ---------------------------------------------------------


def test_send_message_wakes_a_long_poll_and_the_cursor_shows_each_once(
    control_plane: ControlPlane, namespace: str, gateway: EmbeddedGateway
) -> None:
    setup_group(control_plane, namespace, gateway, "notes")
    pod = with_run(control_plane, namespace, gateway, "notes")
    chat = chat_client(gateway)
    cursor = chat.get("/notes").json()["cursor"]

    poll = in_thread(lambda: chat_client(gateway).get("/notes/messages", params={"after": cursor, "wait": 30}).json())
    r = pod.post("/v1/run/tools/send_message", json={"arguments": {"text": "the build is green"}})
    assert r.status_code == 200, r.text
    batch = poll()
    [note] = batch["messages"]  # woken by the delivery, not by the end of the wait
    assert (note["kind"], note["text"], note["isError"]) == ("message", "the build is green", False)
    assert note["key"].startswith("send:")
    assert batch["cursor"] == note["id"]

    assert chat.get("/notes/messages", params={"after": batch["cursor"]}).json() == {
        "messages": [],
        "cursor": batch["cursor"],
    }
    pod.post("/v1/run/tools/send_message", json={"arguments": {"text": "second"}})
    pod.post("/v1/run/tools/send_message", json={"arguments": {"text": "third"}})
    later = wait_for(
        lambda: (
            (b := chat.get("/notes/messages", params={"after": batch["cursor"], "wait": 5}).json())["messages"]
            and len(b["messages"]) == 2
            and b
        ),
        what="two more notes",
    )
    assert [m["text"] for m in later["messages"]] == ["second", "third"]
    # Delivered (marked sent) through the delivery loop, with the channel's id for it.
    gw = gateway.gateway
    assert gw is not None
    sent = wait_for(
        lambda: (row := gateway.call(gw.db.call(outbound.get, note["id"]))) is not None and row.state == "sent" and row,
        what="the note marked sent",
    )
    assert sent.external_id == f"local:{note['id']}"


# -- pynchy chat ------------------------------------------------------------------------------


def pynchy_chat(gw: EmbeddedGateway, tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYNCHY_CONFIG": str(tmp_path / "no-config.yaml"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PYNCHY_CHAT_URL": gw.url,
        "PYNCHY_CHAT_TOKEN": CHAT_TOKEN,
        "NO_COLOR": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "pynchy", "chat", *args],
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_pynchy_chat_m_prints_the_answer_and_fails_on_a_failed_turn(
    control_plane: ControlPlane, namespace: str, gateway: EmbeddedGateway, tmp_path: Path
) -> None:
    setup_group(control_plane, namespace, gateway, "cli")
    pod = with_run(control_plane, namespace, gateway, "cli")

    proc = pynchy_chat(gateway, tmp_path, "cli", "-m", "what is 2+2?", "--timeout", "120")
    turn = next_turn(pod)
    assert turn["prompt"] == "what is 2+2?"
    finish_turn(pod, turn["id"], "It is 4.")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == "It is 4.\n"

    proc = pynchy_chat(gateway, tmp_path, "cli", "-m", "and now?")
    turn = next_turn(pod)
    r = pod.post(f"/v1/run/turns/{turn['id']}/events", json={"events": [{"type": "error", "message": "CLI crashed"}]})
    assert r.status_code == 204
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert out == ""
    assert "error: CLI crashed" in err

    proc = pynchy_chat(gateway, tmp_path, "nowhere", "-m", "hi")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "no local channel 'nowhere'" in err

    proc = pynchy_chat(gateway, tmp_path, "cli", "-m", "are you there?", "--timeout", "2")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "no answer within 2s; the message is with the gateway" in err
    next_turn(pod)  # the message did reach the gateway


def test_pynchy_chat_interactive_shows_replies_and_notes_once(
    control_plane: ControlPlane, namespace: str, gateway: EmbeddedGateway, tmp_path: Path
) -> None:
    setup_group(control_plane, namespace, gateway, "live")
    pod = with_run(control_plane, namespace, gateway, "live")

    # Piped stdin: each line is a message; the session ends at the end of input.
    proc = pynchy_chat(gateway, tmp_path, "live", stdin="")
    assert proc.stdin is not None
    proc.stdin.write("first question\n")
    proc.stdin.flush()
    turn = next_turn(pod)
    pod.post("/v1/run/tools/send_message", json={"arguments": {"text": "a note while you wait"}})
    finish_turn(pod, turn["id"], "first answer")
    out, err = proc.communicate(input="pending\n", timeout=60)  # then the end of input
    assert proc.returncode == 0, err
    assert out.count("first answer") == 1
    assert "Nothing pending" in out
    # The note arrived during the answer: shown after it (or, if the session ended first, next time).
    shown_note = out.count("a note while you wait")
    assert shown_note <= 1

    # Away: a note arrives; the next session shows it once, and not the replies it already showed.
    pod.post("/v1/run/tools/send_message", json={"arguments": {"text": "while you were away"}})
    wait_for(
        lambda: any(
            m["text"] == "while you were away" for m in chat_client(gateway).get("/live/messages").json()["messages"]
        ),
        what="the note in the ledger",
    )
    proc = pynchy_chat(gateway, tmp_path, "live", stdin="")
    out2, err2 = proc.communicate(input="", timeout=60)
    assert proc.returncode == 0, err2
    assert out2.count("while you were away") == 1
    assert "first answer" not in out2
    assert "Nothing pending" not in out2
    assert shown_note + out2.count("a note while you wait") == 1

    proc = pynchy_chat(gateway, tmp_path, "live", stdin="")
    out3, _ = proc.communicate(input="", timeout=60)
    assert "while you were away" not in out3
