"""Library commands in a child process, so that Slicer's GUI stays responsive while a scan is
segmented or a model trained; the panel polls ``poll()`` from a timer and Cancel kills the
process group. Progress arrives as JSON lines on the child's stdout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from ..core.errors import Cancelled
from ..inference.options import InferenceOptions
from ..training.plan import IterationTimer


def python_executable() -> str:
    """Slicer's own Python launcher inside Slicer, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


class BackgroundProcess:
    """A library command in a child process; ``poll()`` reads its JSON-line progress."""

    kind = "process"

    def __init__(self, workdir: Path, args: list[str], total: Optional[int] = None):
        self.workdir = workdir
        self.total = total
        cmd = [python_executable(), "-m", "BoneSegmentationLib", *args]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2])] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self.fraction, self.message, self.error = 0.0, "starting", ""
        self.last_record: dict = {}
        self._timer = IterationTimer(total or 0)
        self.returncode: Optional[int] = None
        self.stderr_path = workdir / "stderr.txt"
        self._stderr = open(self.stderr_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env,
                                        start_new_session=True)
        os.set_blocking(self.process.stdout.fileno(), False)
        self._buffer = ""

    def poll(self) -> bool:
        """Read progress; True while running. Call from a GUI timer."""
        try:
            chunk = self.process.stdout.read() or ""
        except (BlockingIOError, TypeError):
            chunk = ""
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "progress" in msg:
                self.fraction, self.message = float(msg["progress"]), msg.get("message", "")
            elif "iteration" in msg:  # a training record
                self._training_record(msg)
        code = self.process.poll()
        if code is None:
            return True
        self.returncode = code
        self.elapsed = time.perf_counter() - self.started
        self._stderr.close()
        if code != 0:
            lines = [ln for ln in self.stderr_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            self.error = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
        return False

    def _training_record(self, msg: dict) -> None:
        """Progress, loss, validation Dice and a time estimate measured from the iterations so far."""
        self.last_record = msg
        self._timer.add(msg)
        if self.total:
            self.fraction = min(1.0, msg["iteration"] / self.total)
        self.message = f"iteration {msg['iteration']}" + (f"/{self.total}" if self.total else "") + \
            (f", loss {msg['loss']:.3f}" if "loss" in msg else "") + \
            (f", validation Dice {msg['val_dice']:.3f}" if "val_dice" in msg else "")
        left = self._timer.minutes_left() if self.total else None
        if left is not None:
            self.message += f", {self._timer.seconds_per_iteration():.1f} s/iteration, about {left:.0f} min left"

    def wait(self, timeout: float = 3600, interval: float = 0.1) -> int:
        deadline = time.monotonic() + timeout
        while self.poll():
            if time.monotonic() > deadline:
                self.cancel()
                raise Cancelled("segmentation took too long and was stopped")
            time.sleep(interval)
        return self.returncode or 0

    def cancel(self) -> None:
        """Stop the child process (and anything it started)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except (ProcessLookupError, PermissionError, AttributeError):
                self.process.kill()
            self.process.wait()
        self.returncode = self.process.returncode
        if not self._stderr.closed:
            self._stderr.close()
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


class BackgroundSegmentation(BackgroundProcess):
    kind = "segment"

    def __init__(self, workdir: Path, volume_node, model: Optional[str], options: InferenceOptions):
        self.volume_node = volume_node
        self.options = options
        self.output = workdir / "bones.nrrd"
        self.review_path = workdir / "bones.review.json"
        self.sidecar_path = workdir / "bones.json"
        args = ["segment", str(workdir / "input.nrrd"), "-o", str(self.output), "--review", str(self.review_path),
                "--progress-json", *options.to_argv()]
        super().__init__(workdir, args + (["--model", str(model)] if model else []))


class BackgroundTraining(BackgroundProcess):
    """``bonesegmentation train`` in a child process; ``request_stop()`` makes it save and stop."""

    kind = "train"

    def __init__(self, run_dir: Path, args: list[str], total: int):
        self.run_dir = run_dir
        self.model_path: Optional[Path] = None  # the exported model, once training has finished
        self.stop_file = run_dir / "STOP"
        self.stop_file.unlink(missing_ok=True)
        super().__init__(run_dir, args + ["--stop-file", str(self.stop_file), "--print-every", "1"], total)

    def request_stop(self) -> None:
        self.stop_file.touch()

    def cleanup(self) -> None:  # the run folder holds checkpoints: keep it
        pass
