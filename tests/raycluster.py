"""A real Ray cluster on this machine, for tests and benchmarks: a head and worker nodes started with `ray start` as
separate processes, each with its own CPU count, environment and free ports, all in a temporary directory of their
own (so that `address=auto` finds this cluster and no other), and stopped by their own process ids.

Each node's `ray start` runs in a new session; every process of the node (GCS, raylet, agents, workers, which put
themselves in process groups of their own) keeps that session id, which is how the node is found and killed: `ray
stop` would stop every Ray on the machine. Ray rewrites a node's 127.0.0.1 to the machine's address and listens on
every interface, so where the machine lets us (root, iproute2) the whole cluster and its drivers run in a network
namespace of their own with only a loopback interface: every connection stays on 127.0.0.1, and nothing outside the
namespace can reach a node. The nodes join with `address=auto` through the shared temporary directory, and a private
token authenticates every connection (RAY_AUTH_MODE=token).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")  # the `ray` program of this Python's environment
PORT_FLAGS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "runtime-env-agent-port", "metrics-export-port")  # fmt: skip
WORKER_PORTS = 16  # ports for a node's worker processes (trials, idle workers, a driver's core worker)
START_TIMEOUT = 90  # seconds for `ray start` to return


@dataclass
class Node:
    """One node: its `ray start` process (whose pid is the node's session id), ports and environment."""

    name: str
    cpus: int
    session: int
    ports: list[int]
    env: dict[str, str]
    log: Path
    killed: bool = False
    pids: set[int] = field(default_factory=set)  # every process of the node seen so far


def free_ports(n: int) -> list[int]:
    """n distinct ports free now on every interface (Ray's servers listen on all of them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_listened(port: int) -> bool:
    """Whether some process still listens on `port` (a connection in TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


def session_processes(session: int) -> set[int]:
    """Live (not zombie) processes whose session id is `session`."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == session:
            found.add(int(entry))
    return found


class RayCluster:
    """Head and workers as separate `ray start` processes; use as a context manager, which stops it whatever
    happens."""

    def __init__(self, env: dict[str, str] | None = None):
        # Short: Ray's Unix socket paths under it must stay within 107 bytes
        self.tmp = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update({"RAY_TMPDIR": str(self.tmp), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                         "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})  # fmt: skip
        self.nodes: list[Node] = []
        self.port = 0
        self.netns = _loopback_namespace()
        self.prefix = ["ip", "netns", "exec", self.netns] if self.netns else []  # runs a command in the namespace

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def head(self) -> Node:
        return self.nodes[0]

    def driver_env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that joins this cluster with address=auto (and of no other Ray)."""
        return {**self.env, **extra}

    def start_head(self, cpus: int, env: dict[str, str] | None = None) -> Node:
        """`ray start --head` with `cpus` CPUs; `env` is the node's own (its trials inherit it)."""
        assert not self.nodes, "the head comes first"
        self.port, dashboard = free_ports(2)
        return self._start("head", cpus, env, ["--head", f"--port={self.port}", "--include-dashboard=false",
                                               f"--dashboard-port={dashboard}"])  # fmt: skip

    def add_worker(self, cpus: int, env: dict[str, str] | None = None) -> Node:
        """A worker node joining the head with address=auto."""
        return self._start(f"worker{len(self.nodes)}", cpus, env, ["--address=auto"])

    def _start(self, name: str, cpus: int, env: dict[str, str] | None, args: list[str]) -> Node:
        ports = free_ports(len(PORT_FLAGS) + WORKER_PORTS)
        log = self.tmp / f"{name}.log"
        cmd = [*self.prefix, str(RAY), "start", *args, "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
               "--num-gpus=0",
               f"--object-store-memory={100 * 2**20}", "--disable-usage-stats",
               *(f"--{flag}={port}" for flag, port in zip(PORT_FLAGS, ports)),
               f"--worker-port-list={','.join(map(str, ports[len(PORT_FLAGS):]))}"]  # fmt: skip
        node_env = {**self.env, **(env or {})}
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, env=node_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
        node = Node(name, cpus, proc.pid, ports, node_env, log)
        self.nodes.append(node)  # before waiting: stop() then finds it whatever happens
        try:
            code = proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        node.pids |= session_processes(node.session)
        if code != 0:
            raise RuntimeError(f"ray start ({name}) failed ({code}): {log.read_text()[-3000:]}")
        return node

    def processes(self, node: Node) -> set[int]:
        """The node's live processes now (and remembered for the final check)."""
        found = session_processes(node.session)
        node.pids |= found
        return found

    def kill(self, node: Node, timeout: float = 30) -> None:
        """SIGKILL every process of the node, by its session id, until none is left (a lost machine)."""
        deadline = time.monotonic() + timeout
        while found := self.processes(node):
            for pid in found:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name}: processes {sorted(found)} survive SIGKILL")
            time.sleep(0.1)
        node.killed = True

    def jobs(self) -> list[dict]:
        """The cluster's job table, from its GCS (read in a separate process: it registers no job itself)."""
        code = ("import json, sys; from ray._raylet import GcsClient; "
                "jobs = GcsClient(address=sys.argv[1]).get_all_job_info(timeout=30).values(); "
                "print(json.dumps([{'job_id': j.job_id.hex(), 'driver_pid': j.driver_pid, 'is_dead': j.is_dead, "
                "'entrypoint': j.entrypoint} for j in jobs]))")  # fmt: skip
        address = (self.tmp / "ray" / "ray_current_cluster").read_text().strip()
        out = subprocess.run([*self.prefix, sys.executable, "-c", code, address], env=self.env, capture_output=True,
                             text=True, timeout=60, check=True)  # fmt: skip
        return json.loads(out.stdout.strip().splitlines()[-1])

    def stop(self) -> list[str]:
        """Kill every node (workers first), check that none of their processes or ports is left, remove the
        temporary directory; returns what was left, if anything (empty: clean)."""
        left = []
        for node in reversed(self.nodes):
            try:
                self.kill(node)
            except RuntimeError as e:
                left.append(str(e))
        for node in self.nodes:
            alive = {pid for pid in node.pids if _alive(pid, node.session)}
            left += [f"{node.name}: process {pid} alive" for pid in sorted(alive)]
            if not self.netns:
                left += [f"{node.name}: port {p} still bound" for p in node.ports if port_listened(p)]
        if self.netns:  # every socket of the cluster lived in its namespace: none may still listen there
            listening = subprocess.run([*self.prefix, "ss", "-ltnH"], capture_output=True, text=True).stdout.split("\n")
            left += [f"still listening in {self.netns}: {line.split()[3]}" for line in listening if line.strip()]
            subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)
        elif self.port and port_listened(self.port):
            left.append(f"head: GCS port {self.port} still bound")
        shutil.rmtree(self.tmp, ignore_errors=True)
        return left


def _loopback_namespace() -> str | None:
    """A new network namespace whose only interface is loopback, up; None where one cannot be made here."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("ss"):
        return None
    name = f"fmnist-ray-{secrets.token_hex(4)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True)
    if made.returncode:
        return None
    up = subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], capture_output=True)
    if up.returncode:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        return None
    return name


def _alive(pid: int, session: int) -> bool:
    """Whether `pid` is still a live process of `session` (not a zombie, not a new process that reuses the id)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0] != "Z" and int(fields[3]) == session
