"""A real local Ray cluster for tests and benchmarks, kept inside a private network namespace.

Ray advertises the machine's interface address even when told 127.0.0.1, so the cluster (and
the driver, which must reach it) run in a network namespace of their own, where loopback is the
only interface: nothing of the cluster can be reached from, or reach, outside this machine. The
namespace is held by a small reaper (its PID 1); commands enter it with ``nsenter``. Each node is
a ``ray start`` with its own ``VARIANTLAB_HOME`` (a worker's store is its own), one ``variantlab``
slot and the CPUs asked for; nodes are stopped by their process ids, then the namespace.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

VENV_BIN = Path(sys.executable).parent
HEAD_PORT = 6379


def namespaces_available() -> str | None:
    """Why a namespaced cluster cannot start here, or None when it can."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not (VENV_BIN / "ray").exists():
        return "ray is not installed (pip install 'variantlab[cluster]')"
    probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare refused: {probe.stderr.strip()}"


@dataclass
class Node:
    name: str
    home: Path
    port: int  # its raylet's node-manager port: how its raylet is found among the processes
    pids: list[int] = field(default_factory=list)


@dataclass
class NamespacedCluster:
    root: Path
    holder: subprocess.Popen[bytes]
    init_pid: int
    nodes: list[Node] = field(default_factory=list)

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """The environment of a process in the namespace: its own variantlab home, Ray without auth or usage stats."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VARIANTLAB_HOME"))}
        return {**keep, "VARIANTLAB_HOME": str(home), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_ADDRESS": f"127.0.0.1:{HEAD_PORT}", "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", **extra}

    def popen(self, args: Sequence[str], home: Path, **kwargs: object) -> subprocess.Popen[str]:
        """Start a command inside the namespace."""
        return subprocess.Popen(["nsenter", "--target", str(self.init_pid), "--net", "--pid", "--mount", "--", *args],
                                env=self.env(home), text=True, **kwargs)  # type: ignore[call-overload]

    def run(self, args: Sequence[str], home: Path, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace to its end."""
        proc = self.popen(args, home, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    def start_node(self, name: str, cpus: int, head: bool = False, pin: str | None = None) -> Node:
        """One more node (``pin``: the CPUs its processes may run on, as taskset takes them)."""
        node = Node(name, self.root / name, 7100 + len(self.nodes))
        node.home.mkdir(parents=True, exist_ok=True)
        resources = json.dumps({"variantlab": 1, name: 1})
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--resources", resources,
                  "--node-manager-port", str(node.port), "--disable-usage-stats"]
        args = (["ray", "start", "--head", "--port", str(HEAD_PORT), "--include-dashboard=false",
                 "--temp-dir", str(self.root / "ray"), *common] if head
                else ["ray", "start", "--address", f"127.0.0.1:{HEAD_PORT}", *common])
        done = self.run((["taskset", "-c", pin] if pin else []) + args, node.home, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"ray start ({name}) failed: {done.stderr[-2000:]}")
        node.pids = self._started_since([p for n in self.nodes for p in n.pids])
        self.nodes.append(node)
        return node

    def _started_since(self, known: list[int]) -> list[int]:
        """The namespace's Ray processes not belonging to a node started before."""
        here = psutil.Process(self.init_pid).children(recursive=True)
        return [p.pid for p in here if p.pid not in known and _is_ray_daemon(p)]

    def raylet(self, node: Node) -> psutil.Process:
        """The node's raylet (found by its node-manager port)."""
        for pid in node.pids:
            try:
                proc = psutil.Process(pid)
                if "raylet" in proc.name() and f"--node_manager_port={node.port}" in " ".join(proc.cmdline()):
                    return proc
            except psutil.NoSuchProcess:
                continue
        raise LookupError(f"no raylet for node {node.name}")

    def kill_raylet(self, node: Node) -> None:
        """A node dying: its raylet killed by PID (its workers go with it)."""
        self.raylet(node).send_signal(signal.SIGKILL)

    def busy(self, node: Node) -> bool:
        """Whether a unit is running on the node: a worker of its raylet has started variantlab's engine."""
        try:
            for proc in self.raylet(node).children(recursive=True):
                if "spawn_main" in " ".join(proc.cmdline()):  # the engine's child (multiprocessing's spawn)
                    return True
        except (psutil.NoSuchProcess, LookupError):
            return False
        return False

    def stop(self) -> None:
        """Every node's processes killed by PID, then the namespace's PID 1 (which takes anything left)."""
        for node in reversed(self.nodes):
            for pid in node.pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.kill(self.init_pid, signal.SIGKILL)  # from outside, PID 1 dies and takes the namespace with it
        except ProcessLookupError:
            pass
        self.holder.wait(timeout=30)
        shutil.rmtree(self.root / "ray", ignore_errors=True)


def _is_ray_daemon(proc: psutil.Process) -> bool:
    try:
        line = " ".join(proc.cmdline())
    except psutil.NoSuchProcess:
        return False
    return any(tag in line for tag in ("gcs_server", "raylet", "ray/_private", "ray::", "default_worker", "log_monitor",
                                       "dashboard", "monitor.py"))


# The namespace's PID 1: reaps what Ray's daemons leave when they exit (orphans are reparented to it).
_INIT = """
import os, time
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
"""


@contextmanager
def namespaced_cluster(cpus: Sequence[int] = (1, 1, 1), pins: Sequence[str] | None = None) -> Iterator[NamespacedCluster]:
    """A head node plus one more per entry after the first, each with that many CPUs (and pinned to
    ``pins[i]`` when given), in a private namespace."""
    root = Path(tempfile.mkdtemp(prefix="vlray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    holder = subprocess.Popen(["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c",
                               f"ip link set lo up && exec {sys.executable} -c {shlex.quote(_INIT)}"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    init_pid = _child_of(holder.pid)
    cluster = NamespacedCluster(root, holder, init_pid)
    try:
        for i, n in enumerate(cpus):
            cluster.start_node(f"node{i}", n, head=i == 0, pin=pins[i] if pins else None)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _child_of(pid: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = psutil.Process(pid).children()
        if kids:
            return kids[0].pid
        time.sleep(0.05)
    raise RuntimeError("the namespace did not start")
