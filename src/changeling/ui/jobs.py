"""Background jobs for the web UI: one long job (extract, train, convert) per project at a time.

A job is the same ``changeling`` command a user would type, run as a child process of the UI server: it keeps
running when the page is reloaded or the browser closed, a crash in it cannot take the server down, and
"stop" is a Ctrl+C (SIGINT to the job's process group), on which the trainer saves before exiting. The job's
state lives in ``PROJECT/logs/ui_job.json`` and its output in ``PROJECT/logs/ui_job.log``, so a reopened page
shows it again, and a restarted server finds a job that outlived it (same pid, same command line) and can
still stop it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from changeling.errors import UserError

UNKNOWN_EXIT = -1  # the job ended while no server watched it: its exit status is lost


@dataclass
class JobState:
    kind: str = ""  # "extract A", "train", "convert", ...
    argv: list[str] = field(default_factory=list)
    pid: int = 0
    started: float = 0.0  # time.time()
    finished: float = 0.0
    returncode: int | None = None

    @property
    def running(self) -> bool:
        return self.pid > 0 and self.returncode is None

    def status_line(self, now: float | None = None) -> str:
        if not self.kind:
            return "no job has run yet"
        if self.running:
            return f"{self.kind}: running for {_duration((now or time.time()) - self.started)}"
        took = _duration(self.finished - self.started)
        if self.returncode == UNKNOWN_EXIT:
            return f"{self.kind}: ended while the UI was not running (outcome unknown; see the log)"
        verdict = {0: "finished", 130: "stopped"}.get(self.returncode or 0, f"failed (exit {self.returncode})")
        return f"{self.kind}: {verdict} after {took}"


class JobRunner:
    """Runs at most one job per project folder; thread-safe.

    ``command`` is the program the job's arguments are appended to (default: this Python running
    ``-m changeling``); tests pass another program.
    """

    def __init__(self, project: Path, command: Sequence[str] | None = None) -> None:
        self.project = Path(project)
        self.command = list(command) if command is not None else [sys.executable, "-m", "changeling"]
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self.state = self._load()
        self.poll()

    @property
    def state_path(self) -> Path:
        return self.project / "logs" / "ui_job.json"

    @property
    def log_path(self) -> Path:
        return self.project / "logs" / "ui_job.log"

    def _load(self) -> JobState:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            return JobState(**{k: v for k, v in data.items() if k in JobState.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return JobState()

    def _save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self.state)), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def start(self, kind: str, args: list[str]) -> JobState:
        """Start ``COMMAND ARGS`` in the project folder; refuses while another job runs."""
        with self._lock:
            self._poll_locked()
            if self.state.running:
                raise UserError(f"a job is already running ({self.state.kind}); stop it or wait for it")
            argv = [*self.command, *args]
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the child process
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            try:
                self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              cwd=self.project, env=env, start_new_session=True)
            finally:
                log.close()
            self.state = JobState(kind=kind, argv=argv, pid=self._proc.pid, started=time.time())
            self._save()
            threading.Thread(target=self._wait, args=(self._proc,), daemon=True).start()
            return self.state

    def _wait(self, proc: subprocess.Popen[bytes]) -> None:
        rc = proc.wait()
        with self._lock:
            if self.state.pid == proc.pid and self.state.returncode is None:
                self._finish(rc)

    def _finish(self, rc: int) -> None:
        # a signal death reads as the shell would report it: 128 + signal number (SIGINT: 130)
        self.state.returncode = rc if rc >= 0 else 128 - rc
        self.state.finished = time.time()
        self._save()

    def _poll_locked(self) -> None:
        if not self.state.running:
            return
        if self._proc is not None and self._proc.pid == self.state.pid:
            rc = self._proc.poll()
            if rc is not None:
                self._finish(rc)
        elif not _same_process(self.state.pid, self.state.argv):
            # a job started by an earlier server that has ended since: nobody saw its exit status
            self.state.returncode = UNKNOWN_EXIT
            self.state.finished = time.time()
            self._save()

    def poll(self) -> JobState:
        """The job's state, updated if it has ended."""
        with self._lock:
            self._poll_locked()
            return self.state

    def stop(self, timeout: float = 60.0) -> JobState:
        """Ask the job to stop as Ctrl+C would (it saves first); kill it if it does not end in ``timeout``."""
        with self._lock:
            self._poll_locked()
            if not self.state.running:
                return self.state
            pid, proc = self.state.pid, self._proc
        _signal_group(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._still_running(pid, proc):
            time.sleep(0.05)
        killed = self._still_running(pid, proc)
        if killed:
            _signal_group(pid, signal.SIGKILL)
            while self._still_running(pid, proc):
                time.sleep(0.05)
        with self._lock:
            if self.state.pid == pid and self.state.running and (proc is None or proc.pid != pid):
                # a job adopted from an earlier server: its exit status is not ours to read, but it ended
                # on our Ctrl+C (130, the CLI's code for it) or our kill (137)
                self._finish(-signal.SIGKILL if killed else 130)
        return self.poll()

    def _still_running(self, pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        return _same_process(pid, self.state.argv)

    def wait(self, timeout: float | None = None) -> JobState:
        """Block until the job ends (``TimeoutError`` after ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll().running:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.state.kind} still running after {timeout} s")
            time.sleep(0.05)
        return self.state

    def tail(self, lines: int = 30) -> str:
        """The last lines of the job's output, with progress-bar carriage returns collapsed."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 20000))
                data = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        out = [ln.rstrip("\r").rsplit("\r", 1)[-1] for ln in data.replace("\r\n", "\n").split("\n")]
        return "\n".join([ln for ln in out if ln.strip()][-lines:])


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s} s" if s < 60 else (f"{s // 60} min {s % 60:02d} s" if s < 3600 else
                                    f"{s // 3600} h {s // 60 % 60:02d} min")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but another user's: not our job
        return False
    return True


def _same_process(pid: int, argv: Sequence[str]) -> bool:
    """Whether ``pid`` is alive and still runs ``argv`` (guards against a reused pid where /proc exists)."""
    if pid <= 0 or not _alive(pid):
        return False
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc to compare with: trust the pid
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # exited, not yet reaped
    except (OSError, IndexError):
        pass
    return raw.split(b"\0")[:-1] == [a.encode() for a in argv]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the job's process group (it leads one: ``start_new_session``), as a terminal's Ctrl+C would."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)
