"""The run directory: the one module that knows its file names and how to read them back.

A run directory (``runs/<name>/``) is written by one training process and read by everything
else (eval, predict, report, demo, reproduce)::

    config.yaml             the full resolved config (rerunning it reproduces the run)
    metrics.jsonl           one JSON object per logged step / epoch / test / start / end
    env.json                versions, device, threads, seed, git commit
    classes.json            class names, in label order
    preprocess.safetensors  the input normalisation and sizes the model was trained with
    checkpoints/            last.safetensors + last.state.pt (resumable), best.safetensors
    plots/*.png, report.md, report.html

The reuse rules live here too (:func:`reuse_decision`), so the demo, the experiments and
``reslab train`` agree on when a run is finished, resumable or to be started afresh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ReslabError
from .io import TMP_SUFFIX

__all__ = [
    "CONFIG", "METRICS", "ENV", "CLASSES", "PREPROCESS", "CHECKPOINTS", "PLOTS", "REPORT_MD", "REPORT_HTML",
    "TENSORBOARD", "LOCK", "load_yaml_file", "weights_file", "state_file", "is_run_dir", "prepare", "RunLock", "lock", "read_config", "read_metrics", "last_record",
    "run_status", "Run", "read_run", "reuse_decision",
]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
ENV = "env.json"
CLASSES = "classes.json"
PREPROCESS = "preprocess.safetensors"
CHECKPOINTS = "checkpoints"
PLOTS = "plots"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
TENSORBOARD = "tensorboard"
LOCK = ".lock"
"""Held (``flock``) by the one process writing the run; released when it exits, even by a crash."""


def weights_file(run_dir: PathLike, tag: str) -> Path:
    """``checkpoints/{tag}.safetensors`` (``tag``: ``last`` or ``best``)."""
    return Path(run_dir) / CHECKPOINTS / f"{tag}.safetensors"


def state_file(run_dir: PathLike, tag: str = "last") -> Path:
    """``checkpoints/{tag}.state.pt``: optimizer, schedule, RNG states, step (``weights_only`` loadable)."""
    return Path(run_dir) / CHECKPOINTS / f"{tag}.state.pt"


def is_run_dir(path: PathLike) -> bool:
    """A directory training has set up: it has ``config.yaml`` and ``checkpoints/``."""
    path = Path(path)
    return (path / CONFIG).is_file() and (path / CHECKPOINTS).is_dir()


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_yaml_file(path: Path) -> Any:
    """Plain YAML (``safe_load``: no Python objects) from a UTF-8 file; every failure a ReslabError."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ReslabError(f"{path} is not UTF-8 text; give a YAML file") from None
    except yaml.constructor.ConstructorError as e:
        raise ReslabError(f"{path} uses a YAML tag that reslab does not load ({e.problem}); configs are plain "
                          "YAML: mappings, lists, numbers and strings") from None
    except yaml.YAMLError as e:
        raise ReslabError(f"{path} is not valid YAML ({_first_line(e)}): restore or fix it") from None
    except OSError as e:
        raise ReslabError(f"cannot read {path}: {e.strerror}") from None


def read_config(run_dir: PathLike) -> dict[str, Any]:
    """The run's ``config.yaml`` as a dict ({} when there is none yet); bad YAML is a user error."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return {}
    loaded = load_yaml_file(path)
    if loaded is not None and not isinstance(loaded, dict):
        raise ReslabError(f"{path} must hold a mapping of config keys, got {type(loaded).__name__}")
    return loaded or {}


def read_metrics(path: PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a ``metrics.jsonl`` file (or of a run directory's), in order.

    Unparsable lines are skipped: the last line is truncated when a process was killed mid-write.

    Args:
        path: the ``metrics.jsonl`` file, or the run directory holding it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ReslabError(f"{path} does not exist: pass a run directory's metrics.jsonl") from None
    lines = text.splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if i != len(lines) - 1:
                log.warning("%s line %d is not a JSON object; skipped", path, i + 1)
            continue
        records.append(record)
    return records


def last_record(run_dir: PathLike, event: str) -> dict[str, Any]:
    """The last ``metrics.jsonl`` record of ``event`` ({} when there is none or no metrics yet)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return {}
    found: dict[str, Any] = {}
    for r in read_metrics(path):
        if r.get("event") == event:
            found = r
    return found


def run_status(run_dir: PathLike) -> str | None:
    """The status of the run's last ``end`` record (``finished``, ``interrupted``, ``nan``), or
    None while it has none (never started, running, or killed)."""
    status = last_record(run_dir, "end").get("status")
    return str(status) if status is not None else None


def reuse_decision(run_dir: PathLike) -> Literal["reuse", "resume", "fresh"]:
    """What to do with ``run_dir`` when asked to train into it again.

    ``reuse``: it finished (or diverged: a NaN is a result, not a reason to retrain);
    ``resume``: it has a config and a resumable checkpoint; ``fresh``: anything else (absent, or
    stopped before its first checkpoint, when nothing in it is worth keeping).
    """
    if run_status(run_dir) in ("finished", "nan"):
        return "reuse"
    if (Path(run_dir) / CONFIG).is_file() and state_file(run_dir).is_file():
        return "resume"
    return "fresh"


def _has_checkpoint(out: Path) -> bool:
    return state_file(out).is_file() or weights_file(out, "last").is_file() or weights_file(out, "best").is_file()


def _is_empty_dir(path: Path) -> bool:
    """Nothing in it but (empty) ``checkpoints/`` and ``plots/`` and the lock: what an aborted start leaves."""
    for p in path.iterdir():
        if p.name == LOCK:
            continue
        if p.name in (CHECKPOINTS, PLOTS) and p.is_dir() and not any(p.iterdir()):
            continue
        return False
    return True


def prepare(out: Path, resume: bool, *, force: bool = False) -> bool:
    """Check ``out`` before training writes into it (the caller holds its :func:`lock`).

    A resume needs a run there; a new run needs a directory that holds no run and nothing else,
    unless ``force`` (the user's files with the names of a run's files are then replaced). A run
    that never saved a checkpoint (stopped by bad data, a NaN at its first steps, a kill) has
    nothing to resume and is started again. Leftover temporary files of a killed writer are
    removed. Returns whether to resume.
    """
    out = Path(out)
    started = (out / CONFIG).exists() or (out / METRICS).exists()
    if resume and not is_run_dir(out):
        raise ReslabError(f"{out} is not a run directory (no config.yaml and checkpoints/); give the --out of an earlier run")
    if started and not _has_checkpoint(out):
        log.warning("%s holds a run that saved no checkpoint; starting it again", out)
        for name in (CONFIG, METRICS, ENV, CLASSES, PREPROCESS, REPORT_MD, REPORT_HTML):
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
        shutil.rmtree(out / TENSORBOARD, ignore_errors=True)
        return False
    if resume:
        for tmp in (out / CHECKPOINTS).glob(f".*{TMP_SUFFIX}"):  # a killed save's half-written files
            tmp.unlink(missing_ok=True)
        return True
    if started:
        raise ReslabError(f"{out} already holds a run; continue it with --resume {out} or choose another --out")
    if out.is_dir() and not force and not _is_empty_dir(out):
        raise ReslabError(f"{out} exists and holds other files; choose a new or empty --out "
                          "(or pass --force to write the run's files into it)")
    return False


def make_dirs(out: Path) -> None:
    """``checkpoints/`` and ``plots/``, made once the run has passed its checks."""
    try:
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        (out / PLOTS).mkdir(exist_ok=True)
    except OSError as e:
        raise ReslabError(f"cannot write to output directory {out}: {e.strerror}; choose a writable --out") from None


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock`` for the life of the writing process (or until
    :meth:`release`). A crash releases it, so a lock is never stale. Where the directory did not
    exist, :meth:`release` with ``cleanup`` removes what the lock itself created."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir)
        self.created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.fd: int | None = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ReslabError(f"cannot write to output directory {self.path}: {e.strerror}; choose a writable --out") from None
        try:
            import fcntl
        except ImportError:  # no flock (Windows): no exclusion, as before
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            self.fd = None
            raise ReslabError(f"{self.path} is in use by another reslab process (pid {holder}); wait for it to "
                              "finish, or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self, cleanup: bool = False) -> None:
        if self.fd is None:
            return
        if cleanup and not (self.path / CONFIG).exists():  # a start that failed its checks leaves nothing behind
            if self.created and _is_empty_dir(self.path):
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                (self.path / LOCK).unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


def lock(run_dir: PathLike) -> RunLock:
    """Take ``run_dir``'s lock, or raise a one-line ReslabError naming the process holding it."""
    return RunLock(Path(run_dir))


def _num(v: Any) -> float | int | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int_or_none(v: Any) -> int | None:
    return int(v) if _num(v) is not None else None


@dataclass
class Run:
    """What one run directory holds, parsed.

    ``steps`` and ``epochs`` are sorted and hold one entry per step / epoch number: when a resumed
    run logs a number again, the later line wins. ``tests`` holds one entry per
    (split, protocol, checkpoint), the later line winning; ``end`` is the last "end" line or None
    while the run is unfinished.
    """

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    tests: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    start: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The config's ``name``, else the directory name."""
        name = self.config.get("name")
        return str(name) if name not in (None, "") else self.path.name

    @property
    def has_val(self) -> bool:
        return any(_num(e.get("val_err")) is not None for e in self.epochs)

    def best_val(self) -> tuple[int | None, float | None]:
        """(best epoch, best val error %): from the "end" line when there is one, else the epochs."""
        if self.end is not None and _num(self.end.get("best_val_err")) is not None:
            return _int_or_none(self.end.get("best_epoch")), float(self.end["best_val_err"])
        scored = [(float(e["val_err"]), int(e["epoch"])) for e in self.epochs
                  if _num(e.get("val_err")) is not None and not math.isnan(e["val_err"])]
        if not scored:
            return None, None
        err, epoch = min(scored, key=lambda s: (s[0], s[1]))
        return epoch, err

    def wall_time(self) -> float | None:
        """Seconds: the "end" line's ``wall_time``, else the latest ``time`` logged so far."""
        if self.end is not None and _num(self.end.get("wall_time")) is not None:
            return float(self.end["wall_time"])
        times = [float(r["time"]) for r in (*self.steps, *self.epochs) if _num(r.get("time")) is not None]
        return max(times) if times else None

    def status(self) -> str:
        if self.end is None:
            return "unfinished"
        return str(self.end.get("status", "finished"))

    def test_errors(self, split: str = "test") -> dict[str, float]:
        """Top-1 error (%) per protocol on ``split``; a ``best`` checkpoint's figure is preferred."""
        out: dict[str, tuple[bool, float]] = {}
        for t in self.tests:
            if t.get("split", "test") != split or _num(t.get("top1_err")) is None:
                continue
            protocol = str(t.get("protocol", "center"))
            is_best = t.get("checkpoint") == "best"
            if protocol not in out or is_best or not out[protocol][0]:
                out[protocol] = (is_best, float(t["top1_err"]))
        return {p: err for p, (_, err) in out.items()}

    def test_record(self, split: str = "test") -> dict[str, Any]:
        """The last test record of ``split`` ({} when there is none)."""
        found: dict[str, Any] = {}
        for t in self.tests:
            if t.get("split", "test") == split:
                found = t
        return found

    def params(self) -> int | None:
        """Parameter count, if the config or env recorded one."""
        for source in (self.config, self.env):
            for key in ("params", "num_params", "n_params"):
                if _num(source.get(key)) is not None:
                    return int(source[key])
        return None


def read_run(run_dir: PathLike) -> Run:
    """Parse one run directory (``config.yaml``, ``env.json``, ``metrics.jsonl``).

    A run that has only just started (no metrics yet, or no epoch finished) reads as a Run with
    empty lists.

    Args:
        run_dir: the run directory, e.g. ``runs/resnet20``.
    """
    path = Path(run_dir)
    env_file, metrics_file = path / ENV, path / METRICS
    if not path.is_dir() or not ((path / CONFIG).exists() or metrics_file.exists()):
        raise ReslabError(
            f"{path} is not a run directory (no config.yaml or metrics.jsonl): pass a directory "
            "that training wrote, e.g. runs/<name>"
        )
    config = read_config(path)
    env: dict[str, Any] = {}
    if env_file.exists():
        try:
            loaded = json.loads(env_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ReslabError(f"{env_file} is not valid JSON ({e.msg}): restore or delete it") from None
        env = loaded if isinstance(loaded, dict) else {}

    steps: dict[float, dict] = {}
    epochs: dict[float, dict] = {}
    tests: dict[tuple, dict] = {}
    end = start = None
    for r in read_metrics(metrics_file) if metrics_file.exists() else []:
        event = r.get("event")
        if event == "step" and _num(r.get("step")) is not None:
            steps[r["step"]] = r
        elif event == "epoch" and _num(r.get("epoch")) is not None:
            epochs[r["epoch"]] = r
        elif event == "test":
            key = (r.get("split", "test"), r.get("protocol", "center"), r.get("checkpoint"))
            tests.pop(key, None)  # re-insert so the order is that of the lines that won
            tests[key] = r
        elif event == "end":
            end = r
        elif event == "start" and start is None:
            start = r
    return Run(
        path=path, config=config, env=env,
        steps=[steps[k] for k in sorted(steps)], epochs=[epochs[k] for k in sorted(epochs)],
        tests=list(tests.values()), end=end, start=start,
    )
