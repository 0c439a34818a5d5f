"""A real single-node SLURM cluster on this machine, for the launcher tests (no mocks).

``LocalSlurm(root).start()`` writes ``slurm.conf`` for this host (``select/cons_tres``,
``proctrack/linuxproc``, ``task/none``, state and spool folders under ``root``, ``SlurmUser=root``,
one node with this machine's CPUs and memory), a munge key, starts ``munged``, ``slurmctld`` and
``slurmd`` on free ports, and waits until ``sinfo`` shows the node idle. ``stop()`` ends the three
daemons it started (by pid). Client commands (``sbatch``, ``squeue``, ``scontrol``, submitit) find
the cluster through ``SLURM_CONF``, which ``env()`` returns and ``start()`` exports.

Needs root and Debian's ``slurm-wlm`` + ``munge`` (``launchers/install_slurm.sh``). By hand::

    python tests/launchers/slurm_cluster.py /tmp/lnl-slurm    # starts it, prints the SLURM_CONF line
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing_requirements() -> str | None:
    """Why a real cluster cannot start here, or None."""
    absent = [
        d
        for d in DAEMONS + ("sbatch", "sinfo", "scontrol")
        if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()
    ]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} missing; run launchers/install_slurm.sh as root)"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _bin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class LocalSlurm:
    """One controller + one compute node on this host, all state under ``root``."""

    def __init__(self, root: str | os.PathLike, *, kill_wait_s: int = 2):
        self.root = Path(root).resolve()
        self.host = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.mem_mb = int(_mem_mb() * 0.9)  # slurmd rejects a node that claims more than it has
        self.kill_wait_s = kill_wait_s
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, int] = {}

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        for sub in ("state", "spool", "munge", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        ctld_port, slurmd_port = _free_ports(2)
        r = self.root
        self.conf.write_text(f"""\
ClusterName=lnltest
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5,socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait={self.kill_wait_s}
MinJobAge=600
MessageTimeout=30
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        proc = subprocess.Popen(
            [_bin(name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        self.procs[name] = proc.pid

    def start(self, timeout_s: float = 90.0) -> LocalSlurm:
        """Write the config, start the three daemons (foreground, so their pids are ours) and wait."""
        self.write_config()
        m = self.root / "munge"
        self._spawn(
            "munged",
            [
                "-F",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={m}/munge.key",
                f"--pid-file={m}/munged.pid",
                f"--log-file={m}/munged.log",
                f"--seed-file={m}/munged.seed",
            ],
        )
        self._wait(lambda: self.munge_socket.exists(), 20, "munged socket")
        self._spawn("slurmctld", ["-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["-D", "-N", self.host, "-f", str(self.conf)])
        os.environ["SLURM_CONF"] = str(self.conf)
        self._wait(self.node_idle, timeout_s, "the node to become idle in sinfo")
        return self

    def node_idle(self) -> bool:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, env=self.env()
        )
        return out.returncode == 0 and out.stdout.strip().rstrip("*") == "idle"

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            for name, pid in self.procs.items():
                if _exited(pid):
                    raise RuntimeError(
                        f"{name} exited while waiting for {what}; logs in "
                        f"{self.root / 'log'}:\n" + self.logs()
                    )
            time.sleep(0.5)
        raise TimeoutError(
            f"timed out after {timeout_s:.0f} s waiting for {what}; logs:\n" + self.logs()
        )

    def logs(self, tail: int = 30) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path}\n" + "\n".join(lines))
        return "\n".join(parts)

    def drain(self, timeout_s: float = 30.0) -> None:
        """Cancel every job of this cluster and wait until the queue is empty (a job's result file
        appears before its steps finish; stopping slurmd earlier would orphan them)."""
        subprocess.run(
            ["scancel", "--user", str(os.geteuid())], env=self.env(), capture_output=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=self.env()
            )
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(0.5)

    def job_processes(self) -> list[int]:
        """Job processes of this cluster still alive (slurmstepd, srun, batch scripts, submitit
        tasks): those whose environment names this cluster's ``SLURM_CONF``."""
        mark = f"SLURM_CONF={self.conf}".encode()
        names = (b"slurmstepd", b"srun", b"slurm_script", b"submitit.core._submit")
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if mark in environ and any(n in cmdline for n in names):
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        """Drain the queue, SIGTERM the daemons this object started (slurmd first), SIGKILL what is
        left of them and of this cluster's job processes."""
        if self.procs.get("slurmctld") and not _exited(self.procs["slurmctld"]):
            self.drain()
        for name in reversed(DAEMONS):
            pid = self.procs.get(name)
            if pid is not None and not _exited(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(_exited(p) for p in self.procs.values()):
            time.sleep(0.2)
        for pid in [*self.procs.values(), *self.job_processes()]:
            if not _exited(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _exited(pid)
        self.procs.clear()


def _exited(pid: int) -> bool:
    """True when ``pid`` (a child of ours) has ended; reaps it."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True


if __name__ == "__main__":
    cluster = LocalSlurm(sys.argv[1] if len(sys.argv) > 1 else "/tmp/lnl-slurm").start()
    print(f"export SLURM_CONF={cluster.conf}   # daemons: {cluster.procs}")
