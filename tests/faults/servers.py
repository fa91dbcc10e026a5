"""Private servers for the fault suite, and a TCP proxy that can blackhole a link.

The machine's PostgreSQL and RabbitMQ are shared with other test runs, so faults are
never injected there: the suite starts its own RabbitMQ node and its own PostgreSQL
cluster in a temporary folder, on free ports, and removes them at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psycopg


class ServerUnavailable(RuntimeError):
    """A private server could not be started here; the message says why."""


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def low_free_port() -> int:
    """A free port below the ephemeral range: Erlang's command-line tools take their
    own ports 10,000 above the node's distribution port."""
    for _ in range(200):
        port = random.randrange(20_000, 30_000)
        if _port_is_free(port):
            return port
    raise ServerUnavailable("no free port between 20000 and 30000")


def _run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    try:
        done = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerUnavailable(f"{' '.join(args[:3])}: {exc}") from None
    if done.returncode != 0:
        raise ServerUnavailable(
            f"{' '.join(args)} exited with {done.returncode}: {(done.stderr or done.stdout)[-800:]}"
        )
    return done.stdout


# -- RabbitMQ ---------------------------------------------------------------------------


def _rabbit_script(name: str) -> str | None:
    """The real script, not Debian's wrapper in /usr/sbin (which switches to the
    ``rabbitmq`` user and that user's home and data)."""
    direct = Path("/usr/lib/rabbitmq/bin") / name
    if direct.exists():
        return str(direct)
    return shutil.which(name)


class PrivateRabbit:
    """A RabbitMQ node of our own: its name, ports, data, logs and Erlang cookie live
    in ``base``; ``rabbitmqctl -n <node>`` reaches only this node."""

    def __init__(self, base: Path) -> None:
        server, self.ctl_path = _rabbit_script("rabbitmq-server"), _rabbit_script("rabbitmqctl")
        if not server or not self.ctl_path:
            raise ServerUnavailable("rabbitmq-server is not installed")
        self.base = base
        self.node = f"pf-faults-{uuid.uuid4().hex[:8]}@localhost"
        self.port = low_free_port()
        home = base / "home"
        for folder in (home, base / "mnesia", base / "log"):
            folder.mkdir(parents=True)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "disk_free_limit.absolute = 20MB\n"
            "log.console = false\n"
            "log.file.level = warning\n"
        )
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(low_free_port()),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self._log = (base / "server.out").open("ab")
        self._process = subprocess.Popen(
            [server],
            env=self.env,
            cwd=base,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._await_first_start()
        except BaseException:
            self.stop()
            raise

    def _await_first_start(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerUnavailable(f"the private RabbitMQ node exited: {self._tail()}")
            try:
                self.ctl("await_startup", "--timeout", "30")
                return
            except ServerUnavailable:
                time.sleep(0.5)
        raise ServerUnavailable(f"the private RabbitMQ node did not start: {self._tail()}")

    def _tail(self) -> str:
        logs = [*glob.glob(str(self.base / "log" / "*.log")), str(self.base / "server.out")]
        return "".join(Path(p).read_text(errors="replace")[-600:] for p in sorted(logs))

    def ctl(self, *args: str, timeout: float = 60) -> str:
        return _run([self.ctl_path, "-q", "-n", self.node, *args], env=self.env, timeout=timeout)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app", timeout=120)
        self.ctl("await_startup", "--timeout", "60", timeout=90)

    def ensure_running(self) -> None:
        """Bring the application back if a test left it stopped."""
        with contextlib.suppress(ServerUnavailable):
            self.ctl("await_startup", "--timeout", "1", timeout=20)
            return
        self.start_app()

    def close_all_connections(self, reason: str = "fault injection") -> None:
        self.ctl("close_all_connections", reason)

    def queues(self) -> dict[str, dict[str, int]]:
        """Queue name -> ready, unacked and consumer counts."""
        out = self.ctl(
            "list_queues",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        )
        found: dict[str, dict[str, int]] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[1].isdigit():
                found[parts[0]] = {
                    "ready": int(parts[1]),
                    "unacked": int(parts[2]),
                    "consumers": int(parts[3]),
                }
        return found

    def connections(self, name: str) -> list[str]:
        """The client ports of the open connections that call themselves ``name``."""
        out = self.ctl("list_connections", "--no-table-headers", "client_properties", "peer_port")
        return [
            line.rsplit(None, 1)[-1]
            for line in out.splitlines()
            if f'{{"connection_name","{name}"}}' in line
        ]

    def stop(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(ServerUnavailable):
                self.ctl("stop", timeout=60)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=30)
        self._log.close()


# -- PostgreSQL -------------------------------------------------------------------------


def _postgres_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PrivatePostgres:
    """A PostgreSQL cluster of our own (trust auth), which tests may stop and start."""

    def __init__(self, base: Path) -> None:
        initdb, self.pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        if not initdb or not self.pg_ctl:
            raise ServerUnavailable("PostgreSQL's initdb and pg_ctl are not installed")
        # PostgreSQL refuses to run as root: then the cluster belongs to ``postgres``.
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if not shutil.which("runuser"):
                raise ServerUnavailable("running as root without runuser to switch to postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(base, user="postgres")
        self.base = base
        self.data = base / "data"
        self.port = low_free_port()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        _run(
            [
                *self.as_user,
                initdb,
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            timeout=120,
        )
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        _run(
            [
                *self.as_user,
                self.pg_ctl,
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.base / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            timeout=90,
        )

    def stop(self) -> None:
        _run(
            [*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
            timeout=90,
        )

    def is_running(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def ensure_running(self) -> None:
        if not self.is_running():
            self.start()

    def create_database(self, label: str) -> str:
        name = f"{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


# -- the proxy ---------------------------------------------------------------------------


class BlackholeProxy:
    """Forwards TCP connections to ``target``, until told to blackhole them.

    Blackholed, it keeps every connection open but drops whatever either side sends,
    and a side that closes is not told to the other, as a firewall that silently
    drops packets would do: nothing fails, nothing arrives. A connection that lost
    bytes stays dead after :meth:`heal` (its stream is broken); new connections are
    forwarded again. :meth:`cut` closes every connection at once, as a reset would.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.blackholed = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def url(self, broker_url: str) -> str:
        head, _, tail = broker_url.partition("@")
        return f"{head}@127.0.0.1:{self.port}/{tail.split('/', 1)[1]}"

    def blackhole(self) -> None:
        self.blackholed = True

    def heal(self) -> None:
        self.blackholed = False

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = _Pair(self, client, upstream)
            with self._lock:
                self._pairs = [p for p in self._pairs if not p.closed]
                self._pairs.append(pair)
            pair.start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.close()


class _Pair:
    def __init__(self, proxy: BlackholeProxy, client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.sockets = (client, upstream)
        self.dropped = False
        self.closed = False

    def start(self) -> None:
        client, upstream = self.sockets
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if self.proxy.blackholed or self.dropped:
                    self.dropped = True
                    continue
                sink.sendall(chunk)
        except OSError:
            pass
        if not self.dropped:
            self.close()

    def close(self) -> None:
        self.closed = True
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
