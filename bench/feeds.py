"""Servers on 127.0.0.1 that a benchmark or a test starts: ffmpeg serving a clip as a live MPEG-TS feed, and
the base they share with the tests' brokers (a port picked once, so a restarted server comes back where its
clients look).

ffmpeg comes from PATH, else from the ``imageio-ffmpeg`` wheel (test extra, pip-installed here if missing).
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

#: Ports for loopback servers: below Linux's ephemeral range (32768+), where a client retrying a stopped server
#: could connect to itself, and above Ray's worker ports (10002-19999).
_SERVER_PORTS = range(20000, 32000)


def free_port() -> int:
    """A loopback TCP port free now, for a server started (and maybe stopped and restarted) on it."""
    for port in random.Random().sample(_SERVER_PORTS, 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_SERVER_PORTS}")


def pip_install(package: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True, timeout=600)


def ffmpeg_binary() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        pip_install("imageio-ffmpeg")
        import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


class LoopbackServer:
    """A subprocess serving on a port of 127.0.0.1 picked once, so a restart comes back where its clients look.

    Subclasses give ``command()`` and ``ready()``; ``start()`` runs the command and polls ``ready()`` until
    ``start_timeout``. A strict server that is not ready by then, or exits first, raises; a lenient one just goes on.
    """

    name = "server"
    start_timeout = 15.0
    strict = True

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self):
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout
        while not self.ready():
            if time.monotonic() > deadline or (self.strict and self.process.poll() is not None):
                if self.strict:
                    raise RuntimeError(f"{self.name} did not start")
                break
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved beyond what the server already wrote."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self, grace: float = 10) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class StreamServer(LoopbackServer):
    """ffmpeg serving ``clip`` in a loop, in real time, as MPEG-TS on a loopback URL; killable and restartable.

    Lenient start: UDP has nothing to wait for, and a TCP/HTTP server that does not listen within 10 s shows up
    as the reader's own timeout. A TCP server starts the clip when its one client connects, so that client's
    first frame is the clip's frame 0. ``camera``: every frame at its time, as a camera sends them; otherwise
    ffmpeg's ``-re`` sends the first half second at once (``-readrate_initial_burst``, whose 0 means its default).
    """

    name = "ffmpeg"
    start_timeout = 10.0
    strict = False

    def __init__(self, clip_path: Path, protocol: str = "udp", camera: bool = False) -> None:
        self.clip_path = clip_path
        self.protocol = protocol
        self.camera = camera
        super().__init__()

    @property
    def url(self) -> str:
        return f"{self.protocol}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        target = {"tcp": self.url + "?listen=1", "udp": self.url + "?pkt_size=1316", "http": self.url + "/live.ts"}
        listen = ["-listen", "1"] if self.protocol == "http" else []
        burst = ["-readrate_initial_burst", "0.01"] if self.camera else []
        return [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-re", *burst, "-stream_loop", "-1", "-i",
                str(self.clip_path), "-c", "copy", "-f", "mpegts", *listen, target[self.protocol]]

    def ready(self) -> bool:
        return self.protocol not in ("tcp", "http") or _serving(self.port)


def _serving(port: int) -> bool:
    """Whether TCP ``port`` listens or already has its client, read from /proc: a probe connection would take
    ffmpeg's one client, and once a waiting reader connects ffmpeg (``listen=1``) closes its listener."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            if state in ("0A", "01") and int(local.rsplit(":", 1)[1], 16) == port:  # LISTEN, ESTABLISHED
                return True
    return False
