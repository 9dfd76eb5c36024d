"""examples_harness.py - runs an example's one command (examples/*/run.sh) for
the tests test_example_*.py (no tests here).

  Example   `with Example("fastapi", env={...}) as ex:` starts the example's
            run.sh exactly as a reader would (in its own session, so nothing it
            starts can outlive the test), with HERALD_BIN and PYTHON pointing at
            the build's herald and this interpreter; `ex.stop()` sends SIGTERM
            to run.sh and checks that it stopped everything it started.
"""

import os
import signal
import subprocess
import sys
import tempfile

import requests

from harness import REPO, free_port, herald_bin, wait_until

EXAMPLES = os.path.join(REPO, "examples")


def port_open(port):
    import socket
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url):
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class Example:
    """One run of examples/NAME/run.sh (or another script of the example).

    ports   names of port variables to fill with free ports (HERALD_PORT ...);
            they are in self.ports and passed in the environment
    env     more environment
    """

    def __init__(self, name, ports=("HERALD_PORT",), env=None, script="run.sh", args=()):
        self.dir = os.path.join(EXAMPLES, name)
        self.script = os.path.join(self.dir, script)
        self.args = list(args)
        self.ports = {p: free_port() for p in ports}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        self.env.update({"HERALD_BIN": herald_bin(), "PYTHON": sys.executable,
                         "KEEP_EXAMPLE_DIR": "0"})
        self.env.update({k: str(v) for k, v in self.ports.items()})
        self.env.update({k: str(v) for k, v in (env or {}).items()})
        self.log_file = tempfile.NamedTemporaryFile(prefix="herald-example-", suffix=".log")
        self.proc = None

    def url(self, var, path=""):
        return "http://127.0.0.1:%d%s" % (self.ports[var], path)

    def start(self):
        self.proc = subprocess.Popen(["bash", self.script] + self.args, cwd=self.dir, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def output(self):
        with open(self.log_file.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_http(self, url, timeout=60.0):
        """Waits for 200 from url; fails with run.sh's output if it exits first."""
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s before %s answered:\n%s"
                                     % (self.script, self.proc.returncode, url, self.output()))
            return http_ok(url)
        wait_until(ready, timeout, interval=0.1, what=url)

    def stop(self, timeout=20.0):
        """SIGTERM to run.sh, as Ctrl-C would; returns its status. Whatever is
        left of its session afterwards is killed and reported."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        leftover = self._kill_session()
        assert self.proc.returncode is not None, "run.sh ignored SIGTERM:\n" + self.output()
        assert not leftover, "run.sh left processes running: %s\n%s" % (leftover, self.output())
        return self.proc.returncode

    def _kill_session(self):
        """Processes still in run.sh's session (it is the session leader): killed."""
        sid, left = self.proc.pid, []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if os.getsid(int(pid)) == sid:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    with open("/proc/%s/status" % pid) as f:
                        st = " ".join(l.strip() for l in f if l.startswith(("State", "PPid", "Name")))
                    if "State:\tZ" not in st:  # a zombie is dead already (PID 1 reaps it)
                        left.append("%s (%s) %s" % (pid, cmd, st))
            except OSError:
                pass
        for entry in left:
            try:
                os.kill(int(entry.split()[0]), signal.SIGKILL)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        return left

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        try:
            self.stop()
        except AssertionError:
            if exc_type is None:
                raise
        if exc_type is not None:
            note = "---- %s output ----\n%s" % (self.script, self.output()[-4000:])
            if exc is not None and hasattr(exc, "add_note"):
                exc.add_note(note)
            else:
                sys.stdout.write(note + "\n")
        self.log_file.close()
        return False


def run_script(name, script, args=(), env=None, timeout=30):
    """Runs another script of an example to completion: CompletedProcess (text)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    e.update({"HERALD_BIN": herald_bin(), "PYTHON": sys.executable})
    e.update({k: str(v) for k, v in (env or {}).items()})
    d = os.path.join(EXAMPLES, name)
    return subprocess.run(["bash", os.path.join(d, script)] + list(args), cwd=d, env=e,
                          capture_output=True, text=True, timeout=timeout)


__all__ = ["Example", "EXAMPLES", "http_ok", "port_open", "run_script"]
