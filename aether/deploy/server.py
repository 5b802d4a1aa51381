"""Start `bentoml serve RUN/bento` as a child process on a free loopback port, wait until it is
ready (`/readyz`), stop it by its PID. Used by the tests and the serving benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Dict, Optional


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class BentoServer:
    def __init__(self, bento_dir: Path, log: Path, env: Optional[Dict[str, str]] = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.bento_dir = Path(bento_dir)
        self.log = Path(log)
        self.env = {**os.environ, **(env or {})}
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.proc: Optional[subprocess.Popen] = None
        self._fh: Optional[IO[str]] = None
        self.ready_s = 0.0

    def start(self, timeout: float = 180) -> "BentoServer":
        bentoml = str(Path(sys.executable).parent / "bentoml")
        self._fh = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        cmd = [bentoml, "serve", str(self.bento_dir), "--host", self.host, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._fh, stderr=subprocess.STDOUT)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"bentoml serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        self.ready_s = time.perf_counter() - t0
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"bentoml serve not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's PID (BentoML stops its workers), SIGKILL if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def __enter__(self) -> "BentoServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
