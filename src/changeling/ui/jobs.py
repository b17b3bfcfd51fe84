"""Background jobs for the web UI: one long job (extract, train, convert) per project at a time.

A job is the same ``changeling`` command a user would type, run as a child process of the UI server: it keeps
running when the page is reloaded or the browser closed, a crash in it cannot take the server down, and
"stop" is a Ctrl+C (SIGINT), on which the trainer saves before exiting. The job's state lives in
``PROJECT/logs/ui_job.json`` and its output in ``PROJECT/logs/ui_job.log``, so a reopened page shows it again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from changeling.errors import UserError


@dataclass
class JobState:
    kind: str = ""  # "extract A", "train", "convert", ...
    argv: list[str] = field(default_factory=list)
    pid: int = 0
    started: float = 0.0
    finished: float = 0.0
    returncode: int | None = None

    @property
    def running(self) -> bool:
        return self.pid > 0 and self.returncode is None

    def status_line(self) -> str:
        if not self.kind:
            return "no job has run yet"
        if self.running:
            return f"{self.kind}: running for {time.time() - self.started:.0f} s"
        verdict = {0: "finished", 130: "stopped"}.get(self.returncode or 0, f"failed (exit {self.returncode})")
        return f"{self.kind}: {verdict} after {self.finished - self.started:.0f} s"


class JobRunner:
    """Runs at most one job per project folder; thread-safe."""

    def __init__(self, project: Path) -> None:
        self.project = Path(project)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self.state = self._load()
        if self.state.running and not _alive(self.state.pid):
            # the server restarted while a job ran; that process is gone
            self.state.returncode = -1
            self.state.finished = time.time()
            self._save()

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
        """Start ``changeling ARGS`` for this project; refuses while another job runs."""
        with self._lock:
            self.poll()
            if self.state.running:
                raise UserError(f"a job is already running ({self.state.kind}); stop it or wait")
            argv = [sys.executable, "-m", "changeling", *args]
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the child process
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=self.project, env=env, start_new_session=True)
            log.close()
            self.state = JobState(kind=kind, argv=argv, pid=self._proc.pid, started=time.time())
            self._save()
            threading.Thread(target=self._wait, args=(self._proc,), daemon=True).start()
            return self.state

    def _wait(self, proc: subprocess.Popen[bytes]) -> None:
        rc = proc.wait()
        with self._lock:
            if self.state.pid == proc.pid:
                self.state.returncode = rc if rc >= 0 else 128 - rc
                if rc == -signal.SIGINT:
                    self.state.returncode = 130
                self.state.finished = time.time()
                self._save()

    def poll(self) -> JobState:
        if self._proc is not None and self._proc.poll() is not None and self.state.returncode is None:
            rc = self._proc.returncode
            self.state.returncode = 130 if rc == -signal.SIGINT else rc
            self.state.finished = time.time()
            self._save()
        return self.state

    def stop(self, timeout: float = 60.0) -> JobState:
        """Ask the job to stop as Ctrl+C would (it saves first); kill it if it does not end in ``timeout``."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return self.poll()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return self.poll()

    def wait(self, timeout: float | None = None) -> JobState:
        if self._proc is not None:
            self._proc.wait(timeout)
        return self.poll()

    def tail(self, lines: int = 30) -> str:
        """The last lines of the job's output, with progress-bar carriage returns collapsed."""
        try:
            data = self.log_path.read_bytes()[-20000:].decode("utf-8", "replace")
        except OSError:
            return ""
        out = [ln.rsplit("\r", 1)[-1] for ln in data.replace("\r\n", "\n").split("\n")]
        return "\n".join([ln for ln in out if ln.strip()][-lines:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
