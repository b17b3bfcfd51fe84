"""Background jobs for the web UI: one long job (extract, train, convert) per project at a time.

A job is the same ``changeling`` command a user would type, run as a child process of the UI server: it keeps
running when the page is reloaded or the browser closed, a crash in it cannot take the server down, and
"stop" is a Ctrl+C (SIGINT to the job's process group), on which the trainer saves before exiting. The job's
state lives in ``PROJECT/logs/ui_job.json`` and its output in ``PROJECT/logs/ui_job.log``, so a reopened page
shows it again, and a restarted server finds a job that outlived it and can still stop it.

That file is part of the project, so it may have been planted. A process is taken for the job only when all
of it matches what was recorded at the start: the pid, its start time (clock ticks after boot, from
``/proc/PID/stat``) in the same boot (``boot_id``), its command line, its leading its own process group, and a
random value in its environment that only the server that started it knows. Anything else is never
signalled, and every wait in :meth:`JobRunner.stop` is bounded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from changeling.errors import UserError

log = logging.getLogger(__name__)

UNKNOWN_EXIT = -1  # the job ended while no server watched it: its exit status is lost
JOB_ENV = "CHANGELING_UI_JOB"  # in the job's environment: the random value recorded as JobState.nonce
KILL_WAIT = 5.0  # seconds stop() waits after SIGKILL before it returns regardless
PID_MAX = 1 << 22  # Linux's largest pid_max


@dataclass
class JobState:
    kind: str = ""  # "extract A", "train", "convert", ...
    argv: list[str] = field(default_factory=list)
    pid: int = 0
    started: float = 0.0  # time.time()
    finished: float = 0.0
    returncode: int | None = None
    ticks: int = 0  # the job process's start time: clock ticks after boot (/proc/PID/stat, field 22)
    boot: str = ""  # /proc/sys/kernel/random/boot_id when it started
    nonce: str = ""  # the value of CHANGELING_UI_JOB in the job's environment

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
        except FileNotFoundError:
            return JobState()
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.state_path, exc)
            return JobState()
        state = parse_state(data)
        if state is None:
            log.warning("ignoring %s: not a job state written by changeling ui", self.state_path)
            return JobState()
        return state

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
            nonce = secrets.token_hex(16)
            env = {**os.environ, "PYTHONUNBUFFERED": "1", JOB_ENV: nonce}
            try:
                self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              cwd=self.project, env=env, start_new_session=True)
            finally:
                log.close()
            # Popen returns after the exec: /proc shows the job's own start time, command line and environment
            info = proc_info(self._proc.pid)
            self.state = JobState(kind=kind, argv=argv, pid=self._proc.pid, started=time.time(),
                                  ticks=info.ticks if info is not None else 0, boot=boot_id(), nonce=nonce)
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
        elif not is_job(self.state):
            # a job started by an earlier server that has ended since (nobody saw its exit status), or a file
            # naming some other process: it is not signalled, and it is not followed
            self.state.returncode = UNKNOWN_EXIT
            self.state.finished = time.time()
            self._save()

    def poll(self) -> JobState:
        """The job's state, updated if it has ended."""
        with self._lock:
            self._poll_locked()
            return self.state

    def stop(self, timeout: float = 60.0) -> JobState:
        """Ask the job to stop as Ctrl+C would (it saves first); kill it if it does not end in ``timeout``.
        Returns within ``timeout`` + :data:`KILL_WAIT` seconds; only the job's own process group is signalled
        (checked before each signal)."""
        with self._lock:
            self._poll_locked()  # a state naming a process that is not the job is no longer running after this
            if not self.state.running:
                return self.state
            pid, proc, state = self.state.pid, self._proc, JobState(**asdict(self.state))
        self._signal(pid, proc, state, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._still_running(pid, proc, state):
            time.sleep(0.05)
        killed = self._still_running(pid, proc, state)
        if killed:
            self._signal(pid, proc, state, signal.SIGKILL)
            deadline = time.monotonic() + KILL_WAIT
            while time.monotonic() < deadline and self._still_running(pid, proc, state):
                time.sleep(0.05)
            if self._still_running(pid, proc, state):
                log.warning("job %s (pid %d) did not end after SIGKILL", state.kind, pid)
                return self.poll()
        with self._lock:
            if self.state.pid == pid and self.state.running and (proc is None or proc.pid != pid):
                # a job adopted from an earlier server: its exit status is not ours to read, but it ended
                # on our Ctrl+C (130, the CLI's code for it) or our kill (137)
                self._finish(-signal.SIGKILL if killed else 130)
        return self.poll()

    @staticmethod
    def _still_running(pid: int, proc: subprocess.Popen[bytes] | None, state: JobState) -> bool:
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        return is_job(state)

    def _signal(self, pid: int, proc: subprocess.Popen[bytes] | None, state: JobState, sig: signal.Signals) -> None:
        """Signal the job's process group (it leads one: ``start_new_session``), as a terminal's Ctrl+C would;
        only while it is still our child or still matches everything recorded about it."""
        if self._still_running(pid, proc, state):
            _signal_group(pid, sig)

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


def parse_state(data: Any) -> JobState | None:
    """A :class:`JobState` from the JSON of ``ui_job.json``, or ``None`` when any field has the wrong type or
    an impossible value (the file may have been planted or damaged)."""
    if not isinstance(data, dict):
        return None

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def integer(v: Any, low: int, high: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

    checks = {"kind": lambda v: isinstance(v, str),
              "argv": lambda v: isinstance(v, list) and all(isinstance(a, str) and "\0" not in a for a in v),
              "pid": lambda v: integer(v, 0, PID_MAX), "started": number, "finished": number,
              "returncode": lambda v: v is None or integer(v, -(1 << 31), 1 << 31),
              "ticks": lambda v: integer(v, 0, 1 << 63), "boot": lambda v: isinstance(v, str),
              "nonce": lambda v: isinstance(v, str)}
    if not all(check(data[k]) for k, check in checks.items() if k in data):
        return None
    return JobState(**{k: data[k] for k in checks if k in data})


@dataclass(frozen=True)
class ProcInfo:
    """What ``/proc/PID/stat`` says about a process."""

    ticks: int  # start time: clock ticks after boot
    group: int  # its process group
    zombie: bool  # exited, not yet reaped


def proc_info(pid: int) -> ProcInfo | None:
    """``/proc/PID/stat`` of ``pid``; ``None`` when there is no such process (or no ``/proc``)."""
    try:
        # the name (field 2) may hold spaces and parentheses: the fields after the last ')' start at field 3
        after = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return ProcInfo(ticks=int(after[22 - 3]), group=int(after[5 - 3]), zombie=after[0] == "Z")
    except (OSError, IndexError, ValueError):
        return None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def is_job(state: JobState) -> bool:
    """Whether ``state.pid`` is, now, the job ``state`` describes: alive, started at the recorded time in the
    recorded boot, leading its own process group, running the recorded command line, with the recorded random
    value in its environment. Without ``/proc`` (or with any of it unreadable) nothing matches."""
    if not 0 < state.pid <= PID_MAX or not state.nonce or not state.boot or state.boot != boot_id():
        return False
    info = proc_info(state.pid)
    if info is None or info.zombie or info.ticks != state.ticks or info.group != state.pid:
        return False
    try:
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{state.pid}/environ").read_bytes()
    except OSError:  # another user's process, or gone
        return False
    return (cmdline.split(b"\0")[:-1] == [a.encode() for a in state.argv]
            and f"{JOB_ENV}={state.nonce}".encode() in environ.split(b"\0"))


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError) as exc:  # gone since the check, or never ours
        log.warning("cannot signal job process group %d: %s", pid, exc)
