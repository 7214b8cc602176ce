"""Entry-script processes for the end-to-end tests, started by tests/entry_server.py: each run is a
process of its own that runs `main_cross_cs.py` (or another script) as `python SCRIPT ARGUMENTS` would,
forked from a server that has already imported the scripts' modules, which saves each run the five
seconds of importing torch, torchvision and matplotlib. The tests of a fresh interpreter's start still
start `python` itself: test_training's bad input to both scripts, every torchrun run (tests/
test_distributed.py, and test_run_safety's torchrun case through it) and tests/test_prepare_nyuv2.py's
tool runs."""
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(REPOSITORY, "tests", "entry_server.py")


def entry_with_fault(folder, fault, script="main_cross_cs.py"):
    """The path of a Python file in `folder` that runs the code `fault`, then the entry script `script`
    with the file's own arguments: run_entry's fault injection for the processes that torchrun starts,
    which run a file."""
    entry = os.path.join(REPOSITORY, script)
    path = os.path.join(folder, "entry_with_fault.py")
    with open(path, "w") as stream:
        stream.write(textwrap.dedent(fault) + f"\nimport runpy, sys\nsys.argv[0] = {entry!r}\n"
                     f"runpy.run_path({entry!r}, run_name='__main__')\n")
    return path


class EntryProcess:
    """One entry-script process started by an EntryLauncher: its number among the launcher's runs, its pid
    (the id of its process group too), its output files, and its exit code once it has ended."""

    def __init__(self, launcher, number, pid, arguments, stdout_path, stderr_path):
        self.launcher, self.number, self.pid, self.args = launcher, number, pid, arguments
        self.stdout_path, self.stderr_path = stdout_path, stderr_path

    @property
    def returncode(self):
        """The exit code (negative: killed by that signal), or None while the process runs."""
        return self.launcher.returncodes.get(self.number)

    def poll(self):
        """The exit code, or None while the process runs."""
        self.launcher.collect(timeout=0)
        return self.returncode

    def wait(self, timeout=600):
        """The exit code, waiting up to `timeout` seconds; past that the process group is killed and
        subprocess.TimeoutExpired raised."""
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill_group()
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.launcher.collect(timeout=min(left, 1.0))
        return self.returncode

    def send_signal(self, signal_number, whole_group=False):
        """Send `signal_number` to the process, or to its whole process group."""
        (os.killpg if whole_group else os.kill)(self.pid, signal_number)

    def kill_group(self):
        """SIGKILL to the process group, when it is still there."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while self.returncode is None:
            self.launcher.collect(timeout=1.0)

    def stdout(self):
        """What the process has printed on stdout so far."""
        with open(self.stdout_path) as stream:
            return stream.read()

    def stderr(self):
        """What the process has printed on stderr so far."""
        with open(self.stderr_path) as stream:
            return stream.read()

    def wait_for_line(self, line, timeout=120):
        """Wait until the process has printed `line` on stdout; an AssertionError if it ends first."""
        deadline = time.monotonic() + timeout
        while line not in (printed.strip() for printed in self.stdout().splitlines()):
            if self.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the run ended or ran {timeout} s before printing {line!r}: {self.stderr()}")
            time.sleep(0.05)

    def completed(self, timeout=600):
        """subprocess.CompletedProcess of the process, once it has ended (text stdout and stderr)."""
        self.wait(timeout)
        return subprocess.CompletedProcess(self.args, self.returncode, self.stdout(), self.stderr())


class EntryLauncher:
    """The client of one tests/entry_server.py process; `output_folder` receives the runs' output files."""

    def __init__(self, output_folder):
        self.output_folder = output_folder
        self.server = subprocess.Popen([sys.executable, SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       cwd=REPOSITORY, env={**os.environ, "PYTHONPATH": REPOSITORY})
        self.pending, self.started, self.returncodes, self.processes = b"", [], {}, []

    def collect(self, timeout):
        """Read the server's replies for up to `timeout` seconds (none waiting: return at once)."""
        readable, _, _ = select.select([self.server.stdout], [], [], timeout)
        if not readable:
            return
        chunk = os.read(self.server.stdout.fileno(), 65536)
        if not chunk:
            raise RuntimeError(f"tests/entry_server.py ended (exit code {self.server.wait()})")
        self.pending += chunk
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            reply = json.loads(line)
            if "started" in reply:
                self.started.append(reply["started"])
            else:
                self.returncodes[reply["ended"]] = reply["returncode"]

    def start(self, script, arguments, cwd, fault=None, environment=None, umask=None, new_session=False,
              module=None):
        """Start the entry script `script` (a path, or a file name in the repository), or `python -m
        module` when `module` is given, with `arguments` from `cwd`, after the Python code `fault`
        (dedented) if any; the environment is the test's with PYTHONPATH the repository, updated by
        `environment`. Returns the EntryProcess."""
        stem = os.path.join(self.output_folder, f"run-{len(self.processes) + 1}")
        arguments = [str(argument) for argument in arguments]
        request = {"script": None if script is None else os.path.join(REPOSITORY, script), "module": module,
                   "arguments": arguments, "cwd": str(cwd),
                   "environment": {**os.environ, "PYTHONPATH": REPOSITORY, **(environment or {})},
                   "umask": umask, "stdout": f"{stem}.out", "stderr": f"{stem}.err",
                   "fault": None if fault is None else textwrap.dedent(fault), "new_session": new_session}
        for path in (request["stdout"], request["stderr"]):
            open(path, "w").close()  # readable before the child opens them
        self.server.stdin.write((json.dumps(request) + "\n").encode())
        self.server.stdin.flush()
        while not self.started:
            self.collect(timeout=10)
        command = [script] if module is None else ["-m", module]
        process = EntryProcess(self, len(self.processes), self.started.pop(0), [*command, *arguments],
                               request["stdout"], request["stderr"])
        self.processes.append(process)
        return process

    def run(self, script, arguments, cwd, fault=None, environment=None, umask=None, timeout=600, module=None):
        """Start the entry script as `start` does and wait for it: its subprocess.CompletedProcess."""
        return self.start(script, arguments, cwd, fault, environment, umask, module=module).completed(timeout)

    def close(self):
        """End the server (the runs still going are killed first)."""
        for process in self.processes:
            if process.returncode is None:
                process.kill_group()
        self.server.stdin.close()
        self.server.wait(timeout=30)
