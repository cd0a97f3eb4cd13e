"""Bench: how much memory one student's kernel reaches, and how many students fit on a machine.

A student works through lessons 00 to 09 in order. This script runs them
all in one kernel, the worst case for one kernel (what every lesson leaves
behind accumulates; a student with one kernel per lesson pays instead the
bare kernel once more per lesson open). It starts a real IPython kernel
with ``jupyter_client`` (the venv's ``python3`` kernel over IPC sockets in
an isolated runtime and IPython directory, the notebooks directory as its
working directory, ``LABKIT_REDIS_URL`` unset as on a student's server),
executes every code cell of every notebook in order, and after each
notebook reads from ``psutil``:

==============  ==================================================================
``RSS``         resident memory of the kernel process (counts shared libraries whole)
``USS``         memory only this kernel holds: what one more student adds
``PSS``         RSS with each shared page divided among the processes sharing it
``peak``        the kernel's high-water mark of RSS so far (``VmHWM``)
``children``    most RSS the kernel's child processes (load generators, servers)
                held at once during the lesson, sampled every 0.2 s; and how many
                were left when the lesson ended (should be 0)
==============  ==================================================================

Two baselines first, each in a fresh kernel: a bare kernel, and a kernel that
has only imported ``labkit`` and run lesson 00. Last, an idle Jupyter server
(``jupyter_server`` with JupyterLab, what a JupyterHub single-user server
runs) is started on a free loopback port and its memory read, since each
student also has one of those.

"Students in 16 GB": 16 GiB less a reserve for the operating system,
JupyterHub and its proxy (``--reserve``, default 15 %), divided by what one
student adds: the peak kernel plus its children plus one idle Jupyter server.
Two figures: with RSS (every student pays for the shared libraries again:
conservative) and with USS (libraries shared through the page cache are
counted once, in the reserve: realistic on one machine; the kernel's part
is then its largest USS after a lesson plus how far its RSS peaked above
its largest RSS after a lesson, the transient of a lesson's busiest cell).

Loopback only; every wait is bounded (a cell may take ``--cell-timeout``
seconds). Kills only the processes it started, by PID. Exit status 0 when
every cell of every lesson ran without an error and no child process
outlived its lesson, 1 otherwise.

    .venv/bin/python bench/kernel_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import psutil
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
MB = 1024 * 1024
GIB16 = 16 * 1024 ** 3


class Kernel:
    """An IPython kernel of the venv, isolated in ``home``; cells run one at a time."""

    def __init__(self, home: Path, cell_timeout: float):
        self.cell_timeout = cell_timeout
        (home / "runtime").mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if k != "LABKIT_REDIS_URL"}
        env.update(JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"),
                   MPLCONFIGDIR=str(home / "matplotlib"))
        self.manager = KernelManager(kernel_name="python3", transport="ipc")
        self.manager.connection_file = str(home / "runtime" / f"kernel-{id(self)}.json")
        self.manager.start_kernel(cwd=str(NOTEBOOKS), env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.process = psutil.Process(self.manager.provisioner.process.pid)

    def run(self, code: str) -> str | None:
        """Execute ``code``; None if it ran, else the error's name and message."""
        errors: list[str] = []

        def output(message: dict) -> None:
            if message["msg_type"] == "error":
                errors.append(f"{message['content']['ename']}: {message['content']['evalue']}")

        reply = self.client.execute_interactive(code, timeout=self.cell_timeout,
                                                output_hook=output, allow_stdin=False)
        if reply["content"]["status"] != "ok":
            return errors[0] if errors else reply["content"].get("ename", "error")
        return None

    def children(self) -> list[psutil.Process]:
        try:
            return self.process.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def memory(self) -> dict[str, float]:
        info = self.process.memory_full_info()
        return {"rss": info.rss / MB, "uss": info.uss / MB,
                "pss": getattr(info, "pss", info.uss) / MB, "peak": _high_water(self.process)}

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


class ChildSampler:
    """Most RSS a kernel's children hold at once, sampled every 0.2 s on a thread."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.most = 0.0
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ChildSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            total, alive = 0, 0
            for child in self.kernel.children():
                try:
                    total += child.memory_info().rss
                    alive += 1
                except psutil.NoSuchProcess:
                    pass
            self.most = max(self.most, total / MB)
            self.count = max(self.count, alive)


def _high_water(process: psutil.Process) -> float:
    """VmHWM of a Linux process, in MB (its RSS now elsewhere)."""
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return process.memory_info().rss / MB


def code_cells(notebook: Path) -> list[str]:
    return [c.source for c in nbformat.read(notebook, as_version=4).cells
            if c.cell_type == "code" and c.source.strip()]


def run_lesson(kernel: Kernel, notebook: Path) -> dict:
    started = time.monotonic()
    failures = []
    with ChildSampler(kernel) as children:
        for number, code in enumerate(code_cells(notebook), 1):
            error = kernel.run(code)
            if error is not None:
                failures.append(f"cell {number}: {error[:200]}")
    time.sleep(0.5)  # let anything stopping at the end of the lesson finish
    return dict(kernel.memory(), lesson=notebook.stem, seconds=time.monotonic() - started,
                children=children.most, child_count=children.count,
                left=len(kernel.children()), failures=failures)


def idle_jupyter_server(home: Path) -> dict | None:
    """Start jupyter_server on a free loopback port, read its memory after it settles."""
    runtime = home / "server-runtime"
    runtime.mkdir()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(runtime), IPYTHONDIR=str(home / "ipython"))
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--allow-root", "--ServerApp.ip=127.0.0.1",
         "--ServerApp.port=0", "--ServerApp.open_browser=False",
         f"--IdentityProvider.token={os.urandom(16).hex()}", f"--ServerApp.root_dir={home}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # up to 60 s to start
            if list(runtime.glob("jpserver-*.json")) or server.poll() is not None:
                break
            time.sleep(0.1)
        if server.poll() is not None or not list(runtime.glob("jpserver-*.json")):
            return None
        port = json.loads(next(runtime.glob("jpserver-*.json")).read_text())["port"]
        time.sleep(3)  # extensions finish loading
        info = psutil.Process(server.pid).memory_full_info()
        return {"rss": info.rss / MB, "uss": info.uss / MB,
                "pss": getattr(info, "pss", info.uss) / MB, "port": port}
    finally:
        server.terminate()  # ours, by its PID
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def fresh(home: Path, name: str, cell_timeout: float, lessons: list[Path],
          first: str = "") -> dict:
    """Memory of a fresh kernel after ``first`` and ``lessons``."""
    kernel = Kernel(home / name, cell_timeout)
    try:
        error = kernel.run(first) if first else None
        rows = [run_lesson(kernel, notebook) for notebook in lessons]
        row = dict(kernel.memory(), lesson=name, seconds=sum(r["seconds"] for r in rows),
                   children=max([r["children"] for r in rows], default=0.0),
                   child_count=max([r["child_count"] for r in rows], default=0),
                   left=len(kernel.children()),
                   failures=([error] if error else []) + [f for r in rows for f in r["failures"]])
        return row
    finally:
        kernel.stop()


def table(rows: list[dict]) -> str:
    lines = [f"{'lesson':34} {'RSS':>7} {'USS':>7} {'PSS':>7} {'peak':>7} {'children':>9} "
             f"{'left':>4} {'s':>6}  errors",
             f"{'':34} {'MB':>7} {'MB':>7} {'MB':>7} {'MB':>7} {'MB (n)':>9}"]
    for r in rows:
        lines.append(f"{r['lesson']:34} {r['rss']:7.0f} {r['uss']:7.0f} {r['pss']:7.0f} "
                     f"{r['peak']:7.0f} {r['children']:5.0f} ({r['child_count']}) "
                     f"{r['left']:4d} {r['seconds']:6.1f}  {len(r['failures'])}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reserve", type=float, default=0.15,
                        help="share of 16 GiB kept for the OS, JupyterHub and its proxy")
    parser.add_argument("--cell-timeout", type=float, default=600.0)
    args = parser.parse_args()
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    print(f"Python {platform.python_version()}, {os.cpu_count()} cores, psutil "
          f"{psutil.__version__}; {len(notebooks)} lessons", flush=True)
    with tempfile.TemporaryDirectory(prefix="labkit-kernel-memory-") as tmp:
        home = Path(tmp)
        baselines = [fresh(home, "bare kernel", args.cell_timeout, []),
                     fresh(home, "import labkit + lesson 00", args.cell_timeout,
                           notebooks[:1], first="import labkit")]
        print("\nBaselines (fresh kernels):\n" + table(baselines), flush=True)
        kernel = Kernel(home / "student", args.cell_timeout)
        rows = []
        try:
            print("\nOne kernel, every lesson in order (memory after each lesson):", flush=True)
            for notebook in notebooks:
                rows.append(run_lesson(kernel, notebook))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
        finally:
            kernel.stop()
        server = idle_jupyter_server(home)
    print("\n" + table(rows))
    for r in baselines + rows:
        for failure in r["failures"]:
            print(f"  {r['lesson']}: {failure}")
    peak = max(r["peak"] for r in rows)
    peak_uss = max(r["uss"] for r in rows)
    children = max(r["children"] for r in rows)
    print(f"\nkernel peak RSS (VmHWM) {peak:.0f} MB; largest USS after a lesson "
          f"{peak_uss:.0f} MB; children at most {children:.0f} MB at once")
    if server is None:
        print("idle Jupyter server: could not start one; counted as 0 MB")
        server = {"rss": 0.0, "uss": 0.0, "pss": 0.0}
    else:
        print(f"idle Jupyter server (jupyter_server + JupyterLab): RSS {server['rss']:.0f} MB, "
              f"USS {server['uss']:.0f} MB, PSS {server['pss']:.0f} MB")
    budget = GIB16 * (1 - args.reserve) / MB
    per_rss = peak + children + server["rss"]
    per_uss = peak_uss + (peak - max(r["rss"] for r in rows)) + children + server["uss"]
    print(f"16 GiB less {args.reserve:.0%} for the OS, JupyterHub and its proxy: "
          f"{budget:,.0f} MB for students")
    print(f"  per student by RSS (libraries paid by each): {per_rss:.0f} MB -> "
          f"{int(budget // per_rss)} students")
    print(f"  per student by USS (libraries shared once):  {per_uss:.0f} MB -> "
          f"{int(budget // per_uss)} students")
    ok = all(not r["failures"] for r in baselines + rows) and all(
        r["left"] == 0 for r in baselines + rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
