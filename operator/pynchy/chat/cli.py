"""`pynchy chat <channel>`: a terminal conversation with a Group over the gateway's local channel."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import uuid
from collections.abc import Callable
from typing import TextIO

import click

from pynchy.chat.client import ChatClient, ChatError, ChatTimeoutError, Deadline
from pynchy.chat.config import ChatConfig, ChatConfigError, resolve
from pynchy.chat.protocol import ApprovalAsked, ChannelInfo, MessageAccepted, MessageBatch, QuestionAsked
from pynchy.chat.render import Style, TurnPrinter, message_block
from pynchy.chat.state import StateFile

SEND_SECONDS = 60.0  # interactive: how long a message is re-sent while the gateway is unreachable
POLL_SECONDS = 25.0
APPROVE_PROMPT = "Approve? [y/N] "
YES = ("y", "yes")

LineReader = Callable[[str], str]  # shows the prompt, returns the line read ("" at the end of input)


@click.command("chat")
@click.argument("channel")
@click.option("-m", "--message", help="Send this one message, print the answer and exit (non-zero if it failed).")
@click.option("--timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="With -m: seconds to wait for the answer.")  # fmt: skip
@click.option("--gateway-url", help="Gateway URL (or PYNCHY_CHAT_URL; default: gateway_url in the config file).")
@click.option("--token", help="The gateway's PYNCHY_CHAT_TOKEN (or PYNCHY_CHAT_TOKEN; default: token in the config).")
def chat(channel: str, message: str | None, timeout: float, gateway_url: str | None, token: str | None) -> None:
    """Talk to the Group bound to local CHANNEL (spec.channels[].local.name).

    Reads the gateway URL and token from $PYNCHY_CONFIG or ~/.config/pynchy/chat.yaml (`pynchy dev`
    writes it). Interactive unless -m is given; Ctrl-D or Ctrl-C leaves."""
    for noisy in ("httpx", "httpcore"):  # one INFO line per request would drown the conversation
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = resolve(gateway_url=gateway_url, token=token)
    except ChatConfigError as exc:
        raise click.ClickException(str(exc)) from None
    session = Session(config, channel, sys.stdout, sys.stderr)
    if message is not None:
        sys.exit(session.one_shot(message, timeout, sys.stdin))
    sys.exit(session.interactive(sys.stdin))


class Session:
    def __init__(self, config: ChatConfig, channel: str, out: TextIO, err: TextIO) -> None:
        self.config = config
        self.channel = channel
        self.out, self.err = out, err
        self.style = Style(err)
        self.state = StateFile(config.gateway_url, channel)
        self.client = ChatClient(config, on_retry=self.note)
        self.display = threading.Lock()  # one writer at a time: the answer being streamed, or arrivals
        self.at_prompt = False
        self.prompt = ""
        self.sent = False  # the last message reached the gateway
        self.read_line: LineReader | None = None  # where an approval's answer is read; None: not asked
        self.answered: set[str] = set()  # approvals decided here (a restarted stream shows them again)

    def note(self, text: str) -> None:
        self.err.write(self.style.dim(f"({text})") + "\n")
        self.err.flush()

    def fail(self, text: str) -> None:
        self.err.write(self.style.red("error: ") + text + "\n")
        self.err.flush()

    # -- both modes ------------------------------------------------------------------------

    def connect(self, deadline: Deadline) -> ChannelInfo:
        info = self.client.info(self.channel, deadline)
        if self.config.namespace and info.namespace != self.config.namespace:
            raise ChatError(
                f"local channel {self.channel!r} belongs to Group {info.namespace}/{info.group}, not to namespace "
                f"{self.config.namespace!r} (namespace in {self.config.path})"
            )
        if self.state.load().cursor is None:
            # First use from here: messages from now on are news; older ones are history.
            self.state.update(cursor=info.cursor)
        return info

    def ask(self, text: str, deadline: Deadline, send_deadline: Deadline | None = None) -> bool:
        """Send one message (re-sent with the same id until `send_deadline` while the gateway cannot be
        reached) and show what comes of it before `deadline`. True when answered without error."""
        client_message_id = uuid.uuid4().hex
        self.sent = False
        accepted = self.client.send(self.channel, text, client_message_id, send_deadline or deadline)
        self.sent = True
        return self.show_outcome(accepted, f"cmd:local:{client_message_id}", deadline)

    def show_outcome(self, accepted: MessageAccepted, command_key: str, deadline: Deadline) -> bool:
        if accepted.reply is not None:
            self.out.write(accepted.reply.rstrip("\n") + "\n")
            self.out.flush()
            self.state.update(add=[command_key])
            return True
        if accepted.outcome == "ignored":
            self.fail(f"the agent did not get this message: {accepted.reason or 'ignored'}")
            return False
        if accepted.turn_id is None:
            self.note("already sent; nothing more to show")
            return True
        printer = TurnPrinter(self.out, self.err, self.on_approval, self.on_question)
        for event in self.client.events(self.channel, accepted.turn_id, deadline):
            printer.event(event)
        # Shown here in full: its copy in the channel's messages is skipped.
        self.state.update(add=[f"turn:{accepted.turn_id}"])
        return printer.ok

    def on_approval(self, event: ApprovalAsked) -> None:
        """The turn waits for a decision: show the request, and ask for it where there is someone
        to ask; the turn's stream carries on afterwards."""
        if event.id in self.answered:
            return
        self.err.write(self.style.bold(f"approval needed [{event.id}]: {event.tool}") + "\n")
        self.err.write(event.text.rstrip("\n") + "\n")
        self.err.flush()
        if self.read_line is None:
            self.note(
                f'reply "approve {event.id}" or "deny {event.id}" in pynchy chat {self.channel} '
                "(or in any channel of the Group)"
            )
            return
        self.state.update(add=[f"approval:{event.id}"])  # shown here: its copy among the messages is skipped
        answer = self.read_line(APPROVE_PROMPT).strip().lower()
        self.answered.add(event.id)
        self.decide("approve" if answer in YES else "deny", event.id)

    def on_question(self, event: QuestionAsked) -> None:
        """The agent asks (ask_user): each question with numbered options, answered in order."""
        if event.id in self.answered:
            return
        self.err.write(self.style.bold(f"the agent asks [{event.id}]") + "\n")
        if self.read_line is None:
            self.err.write(event.text.rstrip("\n") + "\n")
            self.note(f'reply "answer {event.id} <number>" in pynchy chat {self.channel}, once per question')
            return
        self.state.update(add=[f"question:{event.id}"])  # shown here: its copy among the messages is skipped
        self.answered.add(event.id)
        for question in event.questions:
            self.err.write(question.question + "\n")
            for number, option in enumerate(question.options, 1):
                self.err.write(f"  {number}) {option}\n")
            words = " or your own words" if question.allow_free_text else ""
            self.err.flush()
            line = self.read_line(f"Answer (1-{len(question.options)}{words}): ").strip()
            if not line:
                self.note("no answer given; the agent is told when the question times out")
                return
            self.command(f"answer {event.id} {line}")

    def decide(self, decision: str, approval_id: str) -> None:
        """Send `approve <id>` or `deny <id>` (a command) and show its answer."""
        self.command(f"{decision} {approval_id}")

    def command(self, text: str) -> None:
        """Send a command (approve, deny, answer) while a turn streams, and show its answer."""
        client_message_id = uuid.uuid4().hex
        try:
            accepted = self.client.send(self.channel, text, client_message_id, Deadline(SEND_SECONDS))
        except ChatError as exc:  # a ChatTimeoutError too
            self.fail(f"could not send `{text}`: {exc}")
            return
        if accepted.reply is not None:
            self.err.write(accepted.reply.rstrip("\n") + "\n")
            self.err.flush()
            self.state.update(add=[f"cmd:local:{client_message_id}"])
        elif accepted.outcome == "ignored":
            self.fail(f"`{text}` was not taken: {accepted.reason or 'ignored'}")
        else:
            self.note(f"`{text}` was taken as a message, not as a decision ({accepted.outcome})")

    def _reader(self, stdin: TextIO, *, use_input: bool) -> LineReader:
        """input() at a terminal conversation (line editing); else the prompt on stderr and one line
        of `stdin`, echoed when it is not a terminal (nobody saw it typed)."""
        echo = not stdin.isatty()

        def read(prompt: str) -> str:
            if use_input:
                try:
                    return input(prompt)
                except EOFError:
                    return ""
            self.err.write(prompt)
            self.err.flush()
            line = stdin.readline()
            if echo or not line:
                self.err.write(line.rstrip("\n") + "\n")
                self.err.flush()
            return line

        return read

    # -- -m ----------------------------------------------------------------------------------

    def one_shot(self, text: str, timeout: float, stdin: TextIO | None = None) -> int:
        """With `stdin` a terminal, an approval the turn waits for is asked there; otherwise only
        shown (someone may decide from another client)."""
        deadline = Deadline(timeout)
        if stdin is not None and stdin.isatty():
            self.read_line = self._reader(stdin, use_input=False)
        try:
            self.connect(deadline)
            return 0 if self.ask(text, deadline) else 1
        except ChatTimeoutError as exc:
            if self.sent:
                self.fail(
                    f"no answer within {timeout:g}s; the message is with the gateway and its answer will show "
                    f"in `pynchy chat {self.channel}`"
                )
            else:
                self.fail(f"{exc} (gave up after {timeout:g}s)")
            return 1
        except ChatError as exc:
            self.fail(str(exc))
            return 1
        except KeyboardInterrupt:
            self.note("stopped waiting; the answer shows next time in `pynchy chat " + self.channel + "`")
            return 130
        finally:
            self.client.close()

    # -- interactive -------------------------------------------------------------------------

    def interactive(self, stdin: TextIO) -> int:
        tty = stdin.isatty() and self.out.isatty()
        if tty:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (line editing and history for input())
        try:
            info = self.connect(Deadline(30))
        except ChatError as exc:
            self.fail(str(exc))
            self.client.close()
            return 1
        self.prompt = f"{self.channel}> " if tty else ""
        self.read_line = self._reader(stdin, use_input=tty)  # an approval's answer: from the same input
        self.note(
            f"{self.channel} → Group {info.namespace}/{info.group} at {self.config.gateway_url}; "
            "Ctrl-D or Ctrl-C leaves"
        )
        arrivals = Arrivals(self, tty)
        try:
            arrivals.catch_up()  # what came while away, before the first prompt
        except ChatError as exc:
            self.note(f"could not read earlier messages: {exc}")
        arrivals.start()
        try:
            while True:
                self.at_prompt = True
                try:
                    line = input(self.prompt) if tty else stdin.readline()
                except EOFError:
                    break
                finally:
                    self.at_prompt = False
                if not tty and line == "":
                    break  # end of piped input
                text = line.strip()
                if not text:
                    continue
                with self.display:
                    try:
                        self.ask(text, Deadline(None), Deadline(SEND_SECONDS))
                    except ChatError as exc:  # a ChatTimeoutError too
                        self.fail(str(exc))
                    self.out.write("\n")
                    self.out.flush()
        except KeyboardInterrupt:
            self.out.write("\n")
            self.note("left; an answer still on its way shows next time")
        finally:
            arrivals.stop()
            self.client.close()
        return 0


class Arrivals(threading.Thread):
    """Messages that reach the channel on their own (send_message notes, scheduled runs' replies,
    answers to other clients): long-polled and printed between answers, each once."""

    def __init__(self, session: Session, tty: bool) -> None:
        super().__init__(name="pynchy-chat-arrivals", daemon=True)
        self.s = session
        self.tty = tty
        self._stop = threading.Event()
        self.client = ChatClient(session.config)
        self.cursor = session.state.load().cursor or 0

    def stop(self) -> None:
        self._stop.set()
        # The long-poll in flight ends with the process (a daemon thread); nothing waits for it.

    def catch_up(self) -> None:
        self._show(self.client.messages(self.s.channel, self.cursor, 0))

    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                batch = self.client.messages(self.s.channel, self.cursor, POLL_SECONDS)
            except ChatError as exc:
                failures += 1
                if failures == 1:
                    with self.s.display:
                        self._print_note(f"messages: {exc}; retrying")
                self._stop.wait(min(30.0, 2.0**failures))
                continue
            failures = 0
            if not self._stop.is_set():
                self._show(batch)

    def _show(self, batch: MessageBatch) -> None:
        if not batch.messages and batch.cursor == self.cursor:
            return
        with self.s.display:
            state = self.s.state.load()
            fresh = [m for m in batch.messages if not state.seen(m.key, m.turn_id)]
            if fresh:
                self._clear_prompt()
                for m in fresh:
                    header, body = message_block(m, self.s.style)
                    self.s.err.write(header + "\n")
                    self.s.err.flush()
                    self.s.out.write(body + "\n\n")
                    self.s.out.flush()
                self._restore_prompt()
            self.s.state.update(cursor=batch.cursor)
            self.cursor = max(self.cursor, batch.cursor)

    def _print_note(self, text: str) -> None:
        self._clear_prompt()
        self.s.note(text)
        self._restore_prompt()

    def _clear_prompt(self) -> None:
        if self.tty and self.s.at_prompt:
            self.s.out.write("\r\x1b[K")

    def _restore_prompt(self) -> None:
        if self.tty and self.s.at_prompt:
            buffer = ""
            with contextlib.suppress(ImportError):
                import readline

                buffer = readline.get_line_buffer()
            self.s.out.write(self.s.prompt + buffer)
            self.s.out.flush()
