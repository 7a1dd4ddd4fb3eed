"""The recorder: a child process that writes runs to MLflow while its parent trains.

Why a process: at this project's scale tracking costs more than training. Importing MLflow,
creating a fresh SQLite store (each about a second: docs/speed.md), encoding images and every write
run on the second core while the parent imports Lightning and trains; the parent only sends small
messages down a pipe.

It also makes runs end honestly. The recorder ignores SIGINT and SIGTERM (they are meant for the
trainer, which reports how its run ended); if the parent dies without a word (SIGKILL, out of
memory), the pipe closes and the recorder marks the run FAILED instead of leaving it RUNNING.

One recorder serves all its parent's runs, one after another (a sequential sweep starts it once)
or many at once (a batched sweep: every message names its run);
it also opens and closes a sweep's parent run (summary.py) for the process that launches the sweep.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Literal

# What a recorder does for a sweep's parent run (summary.py's functions of these names)
SummaryCall = Literal["open_parent", "reopen_parent", "close_parent", "end_parent", "redraw"]


class RecorderError(RuntimeError):
    """The tracking store refused a write; the message says why, in one line."""


class Run:
    """The parent's handle on one run the recorder writes: every message it sends names the run,
    so that one recorder can write many runs at once (a batched sweep's jobs)."""

    def __init__(self, recorder: Recorder, seq: int) -> None:
        self.recorder, self.seq = recorder, seq
        self._started: tuple[str, str] | None = None  # (id, name), once the store has opened it
        self.model_id: str | None = None  # its MLflow model, once a finished run is closed

    def send(self, op: str, *args: Any) -> None:
        """`metrics`, `image`, `model` or `tags`, as RunWriter's methods of those names take them."""
        self.recorder.send(op, self.seq, *args)

    def error(self) -> str | None:
        """The run's first store error, if one has come back (never blocks)."""
        self.recorder.poll()
        return self.recorder._errors.get(self.seq)

    def check(self) -> None:
        """Raise the store's error if one has come back: a run whose record cannot be written
        stops at once instead of training on for nothing."""
        if error := self.error():
            raise RecorderError(error)

    def _start_reply(self) -> tuple[str, str]:
        if self._started is None:
            self._started = self.recorder._reply((self.seq, "start"))
            if self._started is None:
                raise RecorderError(self.recorder._errors.get(self.seq, "the run could not be opened"))
        return self._started

    @property
    def id(self) -> str:
        """The MLflow run id (waits for the store to open the run)."""
        return self._start_reply()[0]

    @property
    def name(self) -> str:
        return self._start_reply()[1]

    def end(self, status: str, error: str | None = None, details: str | None = None, wait: bool = True) -> None:
        """End the run FINISHED, FAILED or KILLED. Waiting, a store error of a finished run is raised;
        not waiting, the recorder closes it in the background and `Recorder.drain` reports errors."""
        self.send("end", status, error, details)
        if not wait:
            self.recorder._unfinished.add(self.seq)
            return
        ended = self.recorder._reply((self.seq, "end"))
        self.model_id = ended[1] if ended else None
        # a run that failed or was stopped reports its own error, not the store's
        if status == "FINISHED" and (error := self.recorder._errors.get(self.seq)):
            raise RecorderError(error)

    def end_with(self, e: BaseException, wait: bool = True) -> None:
        """End the run as `e`, which stopped it, says: an error fails it, an interruption (Ctrl-C,
        a signal, an exit) kills it; the error is kept with its traceback."""
        status = "FAILED" if isinstance(e, Exception) else "KILLED"
        self.end(status, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, traceback.format_exc(), wait)


class Recorder:
    """The parent's end of the pipe."""

    def __init__(self) -> None:
        reply_r, reply_w = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-m", "moonprop.recorder", str(reply_w)],
                                     stdin=subprocess.PIPE, pass_fds=(reply_w,))
        os.close(reply_w)
        self._inbox: BinaryIO = self.proc.stdin  # type: ignore[assignment]
        self._replies = os.fdopen(reply_r, "rb")
        self._seq = 0  # numbers the runs: every message and reply about a run carries its number
        self._errors: dict[int, str] = {}  # each run's first error
        self._answers: dict[tuple[int, str], Any] = {}
        self._unfinished: set[int] = set()  # runs ended in the background, not yet confirmed
        self._ended_in_background: set[int] = set()
        self._tickets = 0  # numbers the calls of summary.py's functions
        self.last: Run | None = None  # the run started last
        # A pipe holds 64 KB, four boundary images: sending from a thread keeps training from
        # waiting while the recorder is still importing MLflow or creating the store.
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._pump = threading.Thread(target=self._send_all, name="moonprop-recorder-pipe", daemon=True)
        self._pump.start()
        atexit.register(self.close)

    def _send_all(self) -> None:
        with contextlib.suppress(OSError):  # a stopped recorder: send() and _read() report it
            while (message := self._outbox.get()) is not None:
                pickle.dump(message, self._inbox, protocol=pickle.HIGHEST_PROTOCOL)
                self._inbox.flush()
            self._inbox.close()

    def prepare(self, uri: str, experiment: str) -> None:
        """Have the recorder open the store and the experiment of a run to come: on a fresh store
        that takes seconds, which then overlap with the trainer's import of Lightning."""
        self.send("prepare", uri, experiment)

    def backlog(self) -> int:
        """Messages sent but not yet taken by the recorder: more than a few, and it is behind."""
        return self._outbox.qsize()

    def send(self, *message: Any) -> None:
        if not self._pump.is_alive():
            raise RecorderError(f"the recorder process has stopped (exit code {self.proc.poll()})")
        self._outbox.put(message)

    def _read(self) -> tuple[int, str, str, Any]:
        try:
            return pickle.load(self._replies)
        except EOFError:
            raise RecorderError(f"the recorder process has stopped (exit code {self.proc.poll()})") from None

    def _take(self, reply: tuple[int, str, str, Any]) -> None:
        """Note one reply: the answer to a run's op or a ticket, and a run's first error."""
        seq, op, kind, value = reply
        if op == "call":  # answers a ticket, not a run
            self._answers[(seq, op)] = (kind, value)
            return
        if not (op == "end" and seq in self._unfinished):  # no one waits for that answer
            self._answers[(seq, op)] = value if kind == "ok" else None
        if kind == "error":
            self._errors.setdefault(seq, value)
        if op == "end":
            self._unfinished.discard(seq)

    def poll(self) -> None:
        """Take every reply that has come, without blocking."""
        while select.select([self._replies], [], [], 0)[0]:
            self._take(self._read())

    def _reply(self, key: tuple[int, str]) -> Any:
        """Block until the reply `key` (a run's number or a ticket, and the op) has come."""
        while key not in self._answers:
            self._take(self._read())
        return self._answers.pop(key)

    def start(self, **start: Any) -> Run:
        """Start recording a run (`start` as RunWriter.open takes it); the store opens it while
        the caller goes on. End it with `Run.end`."""
        self._seq += 1
        self.send("start", self._seq, start)
        self.last = Run(self, self._seq)
        return self.last

    @contextlib.contextmanager
    def run(self, background_end: bool = False, **start: Any) -> Iterator[Run]:
        """Record one run; it ends FINISHED, FAILED with the error, or KILLED when interrupted
        (Ctrl-C, SIGTERM).

        With `background_end`, a run that finished does not wait for the recorder to close it
        (the animation, the last uploads: ~0.3 s): in a sweep the next job trains meanwhile, and
        `drain()` waits for all of them before the sweep's summary.
        """
        run = self.start(**start)
        try:
            yield run
        except BaseException as e:
            run.end_with(e)
            raise
        if background_end:
            self._ended_in_background.add(run.seq)
        run.end("FINISHED", wait=not background_end)

    def drain(self) -> None:
        """Wait until every run ended in the background is closed; report their errors, if any."""
        while self._unfinished:
            self._take(self._read())
        for seq in sorted(self._ended_in_background):
            if error := self._errors.get(seq):
                print(f"moonprop: recording a finished run failed: {error}", file=sys.stderr)
        self._ended_in_background.clear()

    def ask(self, function: SummaryCall, **kwargs: Any) -> int:
        """Have the recorder run one of summary.py's functions, after what it was sent before;
        a ticket for `answer`."""
        self._tickets += 1
        self.send("call", self._tickets, function, kwargs)
        return self._tickets

    def answer(self, ticket: int) -> Any:
        """What the function of `ticket` returned; its error is raised here."""
        kind, value = self._reply((ticket, "call"))
        if kind == "error":
            raise RecorderError(value)
        return value

    def call(self, function: SummaryCall, **kwargs: Any) -> Any:
        return self.answer(self.ask(function, **kwargs))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Let the recorder write what it was sent, then end it."""
        with contextlib.suppress(RecorderError):
            self.drain()
        if self._pump.is_alive():
            self._outbox.put(None)
            self._pump.join()
        self.proc.wait()


_shared: Recorder | None = None


def shared() -> Recorder:
    """This process's recorder, started on first use and kept for the runs that follow."""
    global _shared
    if _shared is None or not _shared.alive():
        _shared = Recorder()
    return _shared


def drain_shared() -> None:
    """Wait for the runs this process's recorder is still closing (before a sweep's summary)."""
    if _shared is not None and _shared.alive():
        _shared.drain()


def close_shared() -> None:
    if _shared is not None:
        _shared.close()


def serve(inbox: BinaryIO, replies: BinaryIO) -> None:
    """The child's loop: apply each message to the run it names, answer `start` and `end`."""
    _settle_child()
    from moonprop.tracking import prepare

    # after MLflow's import, which sets its own: "Creating initial MLflow database tables..." is noise
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    def reply(seq: int, op: str, kind: str, value: Any = None) -> None:
        pickle.dump((seq, op, kind, value), replies)
        replies.flush()

    writers = _Writers(reply)
    while True:
        try:
            op, *args = pickle.load(inbox)
        except (EOFError, pickle.UnpicklingError):  # the pipe closed, between messages or within
            # one: a trainer killed while it wrote leaves a truncated message
            writers.abandon("the training process ended without closing its run (killed, or out of memory)")
            return
        if op == "call":  # a sweep's parent run (summary.py): no part of any run
            ticket, function, kwargs = args
            try:
                reply(ticket, op, "ok", _summary_calls()[function](**kwargs))
            except Exception as e:
                reply(ticket, op, "error", f"MLflow: {type(e).__name__}: {_first_line(e)}")
                if not isinstance(e, LookupError):  # a run that is not there is said in the reply
                    traceback.print_exc(file=sys.stderr)
        elif op == "prepare":  # a run is coming: open its store now, while the trainer imports Lightning
            with contextlib.suppress(Exception):  # the run's start reports whatever is wrong
                prepare(*args)
        else:
            writers.handle(op, *args)


def _settle_child() -> None:
    """The recorder's process: deaf to the signals its trainer handles, MLflow's retries bounded."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A tracking server that goes away mid-run (restarted, its database failing over): MLflow
    # retries each request with backoff, 0 + 4 + 8 + 16 + 32 s, about a minute, so that a restart
    # loses nothing; past that the write fails and the run ends FAILED with the reason (not after
    # MLflow's default ~4 minutes). The CLI has checked that the server answered at the start.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    logging.getLogger("urllib3.connectionpool").addFilter(_SayRetrying())


class _Writers:
    """The runs a recorder is writing, by the parent's numbers, and what each message does to one."""

    def __init__(self, reply: Callable[..., None]) -> None:
        from moonprop.tracking import FLUSH_EVERY_S, RunWriter

        self.reply, self.flush_every, self.open = reply, FLUSH_EVERY_S, RunWriter.open
        self.runs: dict[int, Any] = {}  # RunWriter by the parent's number
        self.broken: set[int] = set()  # after a store error: report it once, then drop the run's writes until `end`

    def handle(self, op: str, seq: int, *args: Any) -> None:
        try:
            if op == "start":
                self.runs[seq] = run = self.open(**args[0])
                self.reply(seq, op, "ok", (run.id, run.name))
                # A flush has a cost of its own besides its rows: a recorder writing 200 runs,
                # each flushed every second, did little else (docs/speed.md). Each run is flushed
                # every 50 ms x runs open.
                for run in self.runs.values():
                    run.flush_every = max(self.flush_every, 0.05 * len(self.runs))
            elif op == "end":
                self.end(seq, *args)
            elif seq in self.runs and seq not in self.broken:
                run = self.runs[seq]
                {"metrics": run.log_metrics, "image": run.log_image, "picture": run.log_picture,
                 "model": run.log_model, "tags": run.set_tags}[op](*args)
        except Exception as e:
            self.broken.add(seq)
            self.reply(seq, op, "error", f"MLflow: {type(e).__name__}: {_first_line(e)}")
            traceback.print_exc(file=sys.stderr)

    def end(self, seq: int, status: str, error: str | None, details: str | None) -> None:
        self.broken.discard(seq)
        if (run := self.runs.pop(seq, None)) is None:
            self.reply(seq, "end", "error", "the run could not be opened")
            return
        if status == "FINISHED":
            run.log_final_pictures()
        run.close(status, error, details)
        self.reply(seq, "end", "ok", (run.id, run.model_id))

    def abandon(self, reason: str) -> None:
        """End every run still open FAILED with `reason`: its trainer is gone."""
        for run in self.runs.values():
            with contextlib.suppress(Exception):
                run.close("FAILED", reason)


class _SayRetrying(logging.Filter):
    """One line when the tracking server stops answering, instead of urllib3's warning for every
    request MLflow retries (and again only if it stops answering later)."""

    QUIET_S = 120.0

    def __init__(self) -> None:
        super().__init__()
        self.said = -self.QUIET_S

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Retrying"):
            return True
        if time.monotonic() - self.said > self.QUIET_S:
            cause = record.getMessage().partition("after connection broken by")[2].strip(" :") or "no answer"
            print(f"moonprop: the tracking server did not answer ({cause[:160]}); MLflow retries each write for "
                  f"about a minute, then a run it cannot write ends FAILED", file=sys.stderr)
        self.said = time.monotonic()
        return False


def _summary_calls() -> dict[str, Callable[..., Any]]:
    from moonprop import summary  # a sweep's first call: MLflow is imported by then

    return {"open_parent": summary.open_parent, "reopen_parent": summary.reopen_parent,
            "close_parent": summary.close_parent, "end_parent": summary.end_parent, "redraw": summary.redraw}


def _first_line(e: Exception) -> str:  # config.first_line's twin: config would import Hydra here
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


if __name__ == "__main__":
    serve(sys.stdin.buffer, os.fdopen(int(sys.argv[1]), "wb"))
    # Every write is committed and answered: skip the ~0.7 s teardown of MLflow and SQLAlchemy.
    os._exit(0)
