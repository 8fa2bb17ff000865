"""rsyslogd as a reference C engine for the file and TCP benchmarks (Debian's package, 8.2302 here).

Only the benchmarks import this module. rsyslogd runs unprivileged in the
foreground (``rsyslogd -n -f CONF -i PIDFILE``) with a work directory of its
own; its one input writes each message as it came (``%rawmsg%`` and a
newline) to one file with omfile, optionally through mmjsonparse
(``cookie=""``: plain JSON, no ``@cee:`` prefix). The copy runs in a ruleset
of its own, so rsyslogd's own messages (start-up notes, warnings), which go
to the default ruleset, never land in the output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from types import TracebackType

__all__ = ["AVAILABLE", "Rsyslog"]

AVAILABLE = shutil.which("rsyslogd") is not None


class Rsyslog:
    """``with Rsyslog(...) as daemon:`` runs one rsyslogd copying ``input`` to ``out``.

    Args:
        workdir: where its own work directory is made (removed on exit).
        module: the input module, e.g. ``imfile`` or ``imtcp``.
        input_params: the input's parameters, e.g. ``File="/in" freshStartTail="off"``.
        out: the file omfile appends to.
        json: put each message through mmjsonparse first.
    """

    def __init__(self, workdir: str, module: str, input_params: str, out: str, json: bool) -> None:
        self.work = tempfile.mkdtemp(dir=workdir)
        self.conf = os.path.join(self.work, "rsyslog.conf")
        with open(self.conf, "w") as f:
            f.write(
                f'global(workDirectory="{self.work}" maxMessageSize="64k")\n'
                f'module(load="{module}")\n'
                + ('module(load="mmjsonparse")\n' if json else "")
                + 'template(name="raw" type="string" string="%rawmsg%\\n")\n'
                f'input(type="{module}" {input_params} ruleset="copy")\n'
                'ruleset(name="copy") {\n'
                + ('action(type="mmjsonparse" cookie="")\n' if json else "")
                + f'action(type="omfile" file="{out}" template="raw" ioBufferSize="256k")\n'
                "}\n"
            )
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Rsyslog:
        self.process = subprocess.Popen(
            ["rsyslogd", "-n", "-f", self.conf, "-i", os.path.join(self.work, "pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        return self

    def check_running(self) -> None:
        """SystemExit with its last words if rsyslogd has exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            raise SystemExit(f"rsyslogd exited ({self.process.returncode}): {err[-500:]}")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
        shutil.rmtree(self.work, ignore_errors=True)
