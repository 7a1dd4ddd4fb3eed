"""The recorder: a child process that writes runs to MLflow while its parent trains.

Why a process: at this project's scale tracking costs more than training. Importing MLflow (~1 s),
creating a fresh SQLite store (~2 s), encoding images and every write run on the second core while
the parent imports Lightning and trains; the parent only sends small messages down a pipe.

It also makes runs end honestly. The recorder ignores SIGINT and SIGTERM (they are meant for the
trainer, which reports how its run ended); if the parent dies without a word (SIGKILL, out of
memory), the pipe closes and the recorder marks the run FAILED instead of leaving it RUNNING.

One recorder serves its parent's runs one after another, so a sequential sweep starts it once;
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
import traceback
from collections.abc import Iterator
from typing import Any, BinaryIO


class RecorderError(RuntimeError):
    """The tracking store refused a write; the message says why, in one line."""


class Recorder:
    """The parent's end of the pipe."""

    def __init__(self) -> None:
        reply_r, reply_w = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-m", "moonprop.recorder", str(reply_w)],
                                     stdin=subprocess.PIPE, pass_fds=(reply_w,))
        os.close(reply_w)
        self._inbox: BinaryIO = self.proc.stdin  # type: ignore[assignment]
        self._replies = os.fdopen(reply_r, "rb")
        self._seq = 0  # the current run's number: replies say which run they are about
        self._error: str | None = None  # the first error of the current run
        self._answers: dict[tuple[int, str], Any] = {}
        self._unfinished: set[int] = set()  # runs whose end was sent but not yet confirmed
        self._tickets = 0  # numbers the calls of summary.py's functions
        self.earlier_errors: list[str] = []  # errors of runs that ended in the background
        self.run_id: str | None = None
        self.run_name: str | None = None
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

    def _read(self) -> tuple[str, str, Any]:
        try:
            return pickle.load(self._replies)
        except EOFError:
            raise RecorderError(f"the recorder process has stopped (exit code {self.proc.poll()})") from None

    def _take(self, reply: tuple[int, str, str, Any]) -> str | None:
        """Note one reply; return its error if it is the current run's first."""
        seq, op, kind, value = reply
        if op == "call":  # answers a ticket, not a run
            self._answers[(seq, op)] = (kind, value)
            return None
        self._answers[(seq, op)] = value if kind == "ok" else None
        if op == "end":
            self._unfinished.discard(seq)
        if seq != self._seq or kind != "error":
            if op == "start" and kind == "ok" and seq == self._seq:
                self.run_id, self.run_name = value
            if kind == "error":
                self.earlier_errors.append(value)
            return None
        if self._error is None:
            self._error = value
            return value
        return None

    def check(self) -> None:
        """Raise the store's error if one has come back (never blocks): a run whose record cannot
        be written stops at once instead of training on for nothing."""
        while select.select([self._replies], [], [], 0)[0]:
            if error := self._take(self._read()):
                raise RecorderError(error)

    def _reply(self, key: tuple[int, str]) -> Any:
        """Block until the reply `key` (a run's number or a ticket, and the op) has come."""
        while key not in self._answers:
            self._take(self._read())
        return self._answers.pop(key)

    def wait(self, op: str) -> Any:
        """Block until `op` of the current run is answered; raise the run's first error, if any."""
        value = self._reply((self._seq, op))
        if self._error:
            raise RecorderError(self._error)
        return value

    def current_run_id(self) -> str:
        """The id of the run being recorded (waits for the store to open it)."""
        if self.run_id is None:
            self.wait("start")
        return self.run_id  # type: ignore[return-value]

    @contextlib.contextmanager
    def run(self, background_end: bool = False, **start: Any) -> Iterator[Recorder]:
        """Record one run (`start` as RunWriter.open takes it); it ends FINISHED, FAILED with the
        error, or KILLED when interrupted (Ctrl-C, SIGTERM).

        With `background_end`, a run that finished does not wait for the recorder to close it
        (the animation, the last uploads: ~0.3 s): in a sweep the next job trains meanwhile, and
        `drain()` waits for all of them before the sweep's summary.
        """
        self._seq += 1
        self._error, self.run_id, self.run_name = None, None, None
        self.send("start", self._seq, start)
        try:
            yield self
        except BaseException as e:
            # An error fails the run; an interruption (Ctrl-C, a signal, an exit) kills it.
            status = "FAILED" if isinstance(e, Exception) else "KILLED"
            error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            self.send("end", status, error, traceback.format_exc())
            with contextlib.suppress(RecorderError):  # the first error is the one to report
                self.wait("end")
            raise
        self.send("end", "FINISHED", None, None)
        if background_end:
            self._unfinished.add(self._seq)
        else:
            self.wait("end")

    def drain(self) -> None:
        """Wait until every run ended in the background is closed; report their errors, if any."""
        while self._unfinished:
            self._take(self._read())
        for error in self.earlier_errors:
            print(f"moonprop: recording a finished run failed: {error}", file=sys.stderr)
        self.earlier_errors = []

    def ask(self, function: str, **kwargs: Any) -> int:
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

    def call(self, function: str, **kwargs: Any) -> Any:
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
    """The child's loop: apply each message to the current run, answer `start` and `end`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A tracking server that goes away mid-run: fail in seconds, not after MLflow's ~4 minutes
    # of retries (the CLI has checked that it answered at the start).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from moonprop.tracking import RunWriter, prepare

    # after MLflow's import, which sets its own: "Creating initial MLflow database tables..." is noise
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    seq: int | None = None  # the run being written, as the parent numbers them

    def reply(op: str, kind: str, value: Any = None, about: int | None = None) -> None:
        pickle.dump((seq if about is None else about, op, kind, value), replies)
        replies.flush()

    run: RunWriter | None = None
    broken = False  # after a store error: report it once, then drop the run's writes until `end`
    while True:
        try:
            op, *args = pickle.load(inbox)
        except (EOFError, pickle.UnpicklingError):  # the pipe closed, between messages or within
            # one: a trainer killed while it wrote leaves a truncated message
            if run is not None:
                run.close("FAILED", "the training process ended without closing its run "
                                    "(killed, or out of memory)")
            return
        if op == "call":  # a sweep's parent run (summary.py): no part of the current run
            ticket, function, kwargs = args
            try:
                from moonprop import summary

                reply(op, "ok", getattr(summary, function)(**kwargs), about=ticket)
            except Exception as e:
                reply(op, "error", f"MLflow: {type(e).__name__}: {_first_line(e)}", about=ticket)
                traceback.print_exc(file=sys.stderr)
            continue
        if op == "prepare":  # a run is coming: open its store now, while the trainer imports Lightning
            with contextlib.suppress(Exception):  # the run's start reports whatever is wrong
                prepare(*args)
            continue
        try:
            if op == "start":
                run, broken, seq = None, False, args[0]
                run = RunWriter.open(**args[1])
                reply(op, "ok", (run.id, run.name))
            elif op == "end":
                status, error, details = args
                if run is None:
                    reply(op, "error", "the run could not be opened")
                    continue
                if status == "FINISHED":
                    run.log_final_pictures()
                finished, run = run, None
                finished.close(status, error, details)
                reply(op, "ok", finished.id)
            elif run is not None and not broken:
                {"metrics": run.log_metrics, "image": run.log_image, "model": run.log_model,
                 "tags": run.set_tags}[op](*args)
        except Exception as e:
            broken = True
            reply(op, "error", f"MLflow: {type(e).__name__}: {_first_line(e)}")
            traceback.print_exc(file=sys.stderr)


def _first_line(e: Exception) -> str:  # config.first_line's twin: config would import Hydra here
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


if __name__ == "__main__":
    serve(sys.stdin.buffer, os.fdopen(int(sys.argv[1]), "wb"))
    # Every write is committed and answered: skip the ~0.7 s teardown of MLflow and SQLAlchemy.
    os._exit(0)
