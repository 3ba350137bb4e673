"""Analysis directories: ``analysis.json`` (settings, one measurement per target, findings), PNG
figures and ``report.md`` / ``report.html``, written by :func:`analyze`.

A directory is owned by one process at a time (the run-directory lock). Rerunning the same command
reuses every target already measured and measures the rest, so a killed analysis resumes where it
stopped (each target's measurement is committed atomically as soon as it is done); other settings
for the same directory are refused rather than mixed. A folder that holds anything but an analysis
is never written into.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .. import rundir
from .._table import format_duration
from .._version import __version__
from ..errors import ReslabError
from ..io import atomic_write_text
from ..report import markdown_to_html
from ..train.distributed import init_distributed, resolve_device
from .targets import Target, resolve_targets

__all__ = ["ANALYSIS_FILE", "Options", "Rendered", "Kind", "register_kind", "KINDS", "analyze", "render_analysis",
           "read_analysis", "default_out", "is_analysis_dir", "render_collection", "wall_time"]

ANALYSIS_FILE = "analysis.json"
MAX_GRID = 101  # grid points per axis: 101 x 101 = 10,201 evaluations of the batch


@dataclass
class Options:
    """Everything a user can set for an analysis; each kind records the fields it uses.

    Args:
        data: the dataset model-name targets are measured on (runs use their own).
        data_dir: where to look for its files first.
        images: test images per target (class-stratified, fixed by ``seed``; default the kind's).
        seed: initialisation seed of model-name targets, and of image and block choices.
        checkpoint: a run's ``best`` or ``last`` weights.
        device: ``cpu``, ``cuda[:N]`` or ``auto``.
        samples: random draws per point (paths: block choices per length; lesion: sets per k).
        points: inputs along each line (shattering).
        lines: lines averaged (shattering).
        image: the image explained (cam).
        target_class: the class explained (cam; default the predicted one).
        grid: grid points per axis, odd so the centre is one (landscape).
        span: the grid covers [-span, span] along each direction (landscape).
        two_d: a 2-D grid along two directions instead of a line (landscape).
        hessian_iters: power iterations per Hessian eigenvalue (landscape).
        threads: CPU threads for torch while measuring (default torch's; on a busy shared CPU 1 can be
            many times faster than 2).
    """

    data: str = "embedded"
    data_dir: str | None = None
    images: int | None = None
    seed: int = 0
    checkpoint: str = "last"
    device: str = "cpu"
    samples: int = 10
    points: int = 256
    lines: int = 4
    image: str | None = None
    target_class: int | None = None
    threads: int | None = None
    grid: int = 21
    span: float = 1.0
    two_d: bool = False
    hessian_iters: int = 20


@dataclass
class Rendered:
    """What a kind adds to its report: one-sentence findings with the measured numbers, and sections."""

    findings: list[str]
    body: list[str] = field(default_factory=list)  # markdown lines after the findings


@dataclass(frozen=True)
class Kind:
    """One ``reslab analyze`` subcommand as data.

    Args:
        name: the subcommand.
        title: the report heading.
        source: the paper it follows.
        about: one paragraph: what is measured, how.
        settings: the :class:`Options` fields that change its numbers (recorded; a rerun must match).
        measure: one target's measurement as JSON-able data (may write figures into the directory).
        render: the findings and report sections from ``analysis.json`` (draws the figures).
        needs_run: targets must be run directories (trained weights).
        images: test images per target unless the user says.
        one_target: takes exactly one target.
        parallel: splits its work over torchrun processes (``measure`` runs on every process).
    """

    name: str
    title: str
    source: str
    about: str
    settings: tuple[str, ...]
    measure: Callable[[Target, Options, torch.device, Path], dict[str, Any]]
    render: Callable[[dict[str, Any], Path], Rendered]
    needs_run: bool = False
    images: int = 32
    one_target: bool = False
    parallel: bool = False


KINDS: dict[str, Kind] = {}
CROSS: list[Callable[[dict[str, dict[str, Any]]], list[str]]] = []
"""Findings that combine analyses of one folder (``analyze report``): each gets ``{relative dir: record}``
and returns markdown lines."""


def register_kind(kind: Kind) -> Kind:
    """Add ``kind`` to :data:`KINDS` (a duplicate name raises)."""
    if kind.name in KINDS:
        raise ValueError(f"analysis {kind.name!r} is registered twice")
    KINDS[kind.name] = kind
    return kind


def _kind(name: str) -> Kind:
    if name not in KINDS:
        import difflib

        close = difflib.get_close_matches(name, [*KINDS, "report"], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ReslabError(f"unknown analysis {name!r}{hint}; choose one of {', '.join([*KINDS, 'report'])}")
    return KINDS[name]


def default_out(kind: str, targets: Sequence[Target], extra: str = "") -> Path:
    """``analyses/<kind>-<target>-<target>...`` (``extra`` appended, e.g. an image's name)."""
    parts = [kind, *(t.label for t in targets), *([extra] if extra else [])]
    return Path("analyses") / "-".join(p.replace("/", "_") for p in parts)


def is_analysis_dir(path: str | Path) -> bool:
    return (Path(path) / ANALYSIS_FILE).is_file()


def read_analysis(out: str | Path) -> dict[str, Any]:
    """``analysis.json`` of an analysis directory, checked."""
    path = Path(out) / ANALYSIS_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReslabError(f"{out} is not an analysis directory (no {ANALYSIS_FILE}); give one written by 'reslab analyze'") from None
    except (OSError, ValueError) as e:
        raise ReslabError(f"{path} is unreadable ({type(e).__name__}); delete the directory and rerun the analysis") from None
    if not isinstance(record, dict) or record.get("analysis") not in KINDS or not isinstance(record.get("measurements"), dict):
        raise ReslabError(f"{path} does not describe a reslab analysis; delete the directory and rerun the analysis")
    return record


def _check_out(out: Path, kind: Kind, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The directory's existing record (None when new), or one line why it cannot be used."""
    if out.exists() and not out.is_dir():
        raise ReslabError(f"{out} is a file; give a directory as --out")
    if is_analysis_dir(out):
        record = read_analysis(out)
        if record["analysis"] != kind.name:
            raise ReslabError(f"{out} holds a {record['analysis']} analysis, not {kind.name}; choose another --out")
        old = record.get("settings", {})
        changed = [k for k in settings if old.get(k) != settings[k]]
        if changed:
            diff = ", ".join(f"{k} {old.get(k)!r} -> {settings[k]!r}" for k in changed)
            raise ReslabError(f"{out} was measured with other settings ({diff}); rerun with the same ones to reuse it, "
                              "or choose another --out")
        return record
    if out.is_dir() and any(p.name != rundir.LOCK for p in out.iterdir()):
        raise ReslabError(f"{out} exists and is not an analysis directory (no {ANALYSIS_FILE}); choose another --out")
    return None


def _write(out: Path, record: dict[str, Any]) -> None:
    atomic_write_text(out / ANALYSIS_FILE, json.dumps(record, indent=2) + "\n")


def analyze(kind: str, targets: Sequence[str], *, out: str | Path | None = None, options: Options | None = None,
            command: str | None = None) -> Path:
    """Measure ``targets`` (model names at initialisation, or run directories) and write the report.

    Args:
        kind: one of :data:`KINDS` (``gradients``, ``shattering``, ``paths``, ``blocks``, ``lesion``, ``cam``,
            ``landscape``).
        targets: model names and/or run directories.
        out: the analysis directory (default :func:`default_out`).
        options: what to measure on and how (:class:`Options`).
        command: the command line recorded in ``analysis.json``.

    Returns:
        The path of ``report.md``.
    """
    k = _kind(kind)
    opts = replace(options or Options())
    if opts.images is None:
        opts.images = k.images
    _check_options(opts)
    if k.one_target and len(targets) != 1:
        raise ReslabError(f"{k.name} takes one run directory, got {len(targets)}: {' '.join(map(str, targets))}")
    resolved = resolve_targets(list(targets))
    if k.needs_run:
        models = [t.label for t in resolved if not t.is_run]
        if models:
            raise ReslabError(f"{k.name} measures trained nets: give run directories, not model names ({', '.join(models)})")
    settings = {name: getattr(opts, name) for name in k.settings}
    for name in ("data", "image"):  # recorded relative: analysis.json names no machine directory
        if isinstance(settings.get(name), str):
            settings[name] = portable_arg(settings[name])
    extra = Path(opts.image).stem if k.name == "cam" and opts.image else ""
    out = Path(out) if out is not None else default_out(k.name, resolved, extra)
    device = resolve_device(opts.device, int(os.environ.get("LOCAL_RANK", "0")))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not k.parallel:
        raise ReslabError(f"{k.name} runs in one process; only landscape splits its grid over torchrun processes")
    ctx = init_distributed(device)
    if ctx.enabled and not ctx.is_main:
        return _follow(k, resolved, opts, device, out)
    try:
        record = _check_out(out, k, settings)
        created = not out.exists()
        lock = rundir.lock(out)
    except BaseException:
        if ctx.enabled:
            _agree(False)  # the other processes stop too instead of waiting
        raise
    threads = torch.get_num_threads()
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    try:
        if record is None:
            record = {"analysis": k.name, "title": k.title, "source": k.source, "settings": settings, "targets": [],
                      "measurements": {}, "findings": [], "reslab": __version__,
                      "command": portable_command(command or shlex.join(["reslab", "analyze", k.name, *map(str, targets)])),
                      "created": _now(), "sessions": []}
        session = {"started": _now(), "wall_time": 0.0}
        record["sessions"].append(session)
        _write(out, record)  # from now on the folder is this analysis's: a killed run resumes in it
        if ctx.enabled:
            _agree(True)
        t_start = time.perf_counter()
        for t in resolved:
            if all(e["key"] != t.key for e in record["targets"]):
                record["targets"].append({"label": t.label, "key": t.key})
            if t.key in record["measurements"]:
                print(f"{t.label}: measured before, reused", flush=True)
                continue
            t0 = time.perf_counter()
            m = k.measure(t, opts, device, out)
            m["wall_time"] = round(time.perf_counter() - t0, 3)
            record["measurements"][t.key] = m
            session["wall_time"] = round(time.perf_counter() - t_start, 3)
            _write(out, record)
            print(f"{t.label}: measured in {format_duration(m['wall_time'])}", flush=True)
        session["wall_time"] = round(time.perf_counter() - t_start, 3)
        _write(out, record)
        return render_analysis(out)
    finally:
        torch.set_num_threads(threads)
        lock.release()
        # a new folder with nothing measured or cached (e.g. a bad target) is removed again
        if created and not (record or {}).get("measurements") and \
                all(p.name in (ANALYSIS_FILE, rundir.LOCK) for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)


def _agree(ok: bool | None) -> bool:
    """Process 0 tells the others whether the analysis directory is ready (True) or it stopped (False)."""
    import torch.distributed as dist

    flag = [ok]
    dist.broadcast_object_list(flag, src=0)
    return bool(flag[0])


def _follow(k: Kind, targets: Sequence[Target], opts: Options, device: torch.device, out: Path) -> Path:
    """A torchrun process other than 0: measure its share of each target process 0 measures; process 0
    gathers the shares and writes everything."""
    if not _agree(None):
        raise ReslabError("process 0 stopped (its message says why)")
    done = read_analysis(out)["measurements"]
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    for t in targets:
        if t.key not in done:
            k.measure(t, opts, device, out)
    return out / "report.md"


def _check_options(o: Options) -> None:
    for name in ("images", "samples", "points", "lines", "hessian_iters"):
        v = getattr(o, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ReslabError(f"--{name} must be a positive integer, got {v!r}")
    if o.images < 2:
        raise ReslabError(f"--images must be at least 2, got {o.images}")
    if o.points < 8:
        raise ReslabError(f"--points must be at least 8, got {o.points}")
    if o.threads is not None and (isinstance(o.threads, bool) or not isinstance(o.threads, int) or o.threads < 1):
        raise ReslabError(f"--threads must be a positive integer, got {o.threads!r}")
    if isinstance(o.grid, bool) or not isinstance(o.grid, int) or o.grid < 3 or o.grid % 2 == 0 or o.grid > MAX_GRID:
        raise ReslabError(f"--grid must be an odd integer from 3 to {MAX_GRID} (the centre is a grid point), got {o.grid!r}")
    if not (isinstance(o.span, (int, float)) and 0 < o.span <= 10):
        raise ReslabError(f"--span must be a number in (0, 10], got {o.span!r}")
    if o.checkpoint not in ("best", "last"):
        raise ReslabError(f"--checkpoint must be best or last, got {o.checkpoint!r}")


def portable_command(command: str) -> str:
    """``command`` with each absolute path argument made relative to the working directory, so the
    record names no directory of the machine it ran on."""
    try:
        args = shlex.split(command)
    except ValueError:
        return command
    return shlex.join(portable_arg(arg) for arg in args)


def portable_arg(arg: str) -> str:
    """One argument (``/abs/x``, ``--out=/abs/x``, ``imagefolder:/abs/x``) with its absolute path made
    relative to the working directory."""
    flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    prefix, colon, path = value.partition(":") if ":" in value and not value.startswith("/") else ("", "", value)
    return f"{flag}{eq}{prefix}{colon}{os.path.relpath(path)}" if os.path.isabs(path) else arg


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def wall_time(record: dict[str, Any]) -> float:
    """Seconds spent measuring, over every session."""
    return sum(float(s.get("wall_time") or 0.0) for s in record.get("sessions", []))


def render_analysis(out: str | Path) -> Path:
    """(Re)draw an analysis directory's figures and write its findings and ``report.md`` / ``.html``."""
    out = Path(out)
    record = read_analysis(out)
    k = KINDS[record["analysis"]]
    if not record["measurements"]:
        raise ReslabError(f"{out} has no measurement yet; rerun the analysis")
    shown = Rendered(**asdict(k.render(record, out)))
    record["findings"] = shown.findings
    _write(out, record)
    per_target = ", ".join(f"{e['label']} {format_duration(record['measurements'][e['key']].get('wall_time'))}"
                           for e in record["targets"] if e["key"] in record["measurements"])
    settings = ", ".join(f"{key} {value}" for key, value in record.get("settings", {}).items() if value is not None)
    md = "\n".join([
        f"# {k.title}", "",
        f"{k.about} Follows {k.source}.", "",
        "## Findings", "", *[f"- {f}" for f in shown.findings], "",
        *shown.body, "",
        "## How this was run", "", f"```\n{record.get('command', '')}\n```", "",
        f"Settings: {settings}. Wall time {format_duration(wall_time(record))} ({per_target}); "
        f"reslab {record.get('reslab', '')}.",
    ]) + "\n"
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", markdown_to_html(md))
    return out / "report.md"


def render_collection(folder: str | Path) -> Path:
    """One report over every analysis directory in ``folder`` (itself or its subfolders, two levels down):
    each analysis re-rendered, then ``folder/report.md`` / ``.html`` with every finding and figure."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReslabError(f"{folder} is not a folder; give the folder that holds your analysis directories, e.g. analyses/")
    found = sorted({p.parent for pattern in (ANALYSIS_FILE, f"*/{ANALYSIS_FILE}", f"*/*/{ANALYSIS_FILE}")
                    for p in folder.glob(pattern)})
    if not found:
        raise ReslabError(f"{folder} holds no analysis directory (no {ANALYSIS_FILE}); run 'reslab analyze' first")
    if found == [folder]:
        return render_analysis(folder)
    found = [d for d in found if d != folder]
    parts = ["# Why residual nets train: analyses", "",
             f"{len(found)} analyses, each with its own report; here every finding and figure.", ""]
    total = 0.0
    for d in found:
        render_analysis(d)
        record = read_analysis(d)
        rel = d.relative_to(folder).as_posix()
        total += wall_time(record)
        figures = sorted(p.relative_to(folder).as_posix() for p in d.glob("*.png"))
        parts += [f"## {record['title']}", "", f"[{rel}]({rel}/report.md): `{record.get('command', '')}` "
                  f"({format_duration(wall_time(record))})", "", *[f"- {f}" for f in record.get("findings", [])], "",
                  *[f"![{Path(f).stem}]({f})\n" for f in figures]]
    records = {d.relative_to(folder).as_posix(): read_analysis(d) for d in found}
    for combine in CROSS:
        parts += combine(records)
    parts += [f"Total measuring time {format_duration(total)}."]
    md = "\n".join(parts) + "\n"
    atomic_write_text(folder / "report.md", md)
    atomic_write_text(folder / "report.html", markdown_to_html(md))
    return folder / "report.md"
