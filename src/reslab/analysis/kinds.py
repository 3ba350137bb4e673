"""The ``reslab analyze`` subcommands: what each measures per target, and its figures and findings."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ReslabError
from ..plots import colours, new_figure, save_png
from ..predict import LoadedRun
from .blocks import block_ratios
from .core import CROSS, Kind, Options, Rendered, portable_arg, register_kind
from .gradients import layer_gradient_norms
from .lesion import error_rate, lesion_errors, random_lesion_errors
from .paths import path_gradients, path_length_distribution
from .shattering import autocorrelation, calibrate_bn, line_gradients, neighbour_correlation, white_noise_autocorrelation
from .structure import has_shortcut, require_blocks
from .targets import Batch, Target, init_model, target_batch, trained_model

__all__ = ["GRADIENTS", "SHATTERING", "PATHS", "BLOCKS", "LESION", "CAM", "LANDSCAPE"]


def _g(v: float | None) -> str:
    """A number for a sentence: 3 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3g}"


def _describe(model: nn.Module) -> dict[str, Any]:
    """Residual or plain, and depth, where the model is a ResNet spec; None otherwise."""
    spec = getattr(model, "spec", None)
    residual = getattr(spec, "residual", None)
    try:
        depth = int(spec.depth) if spec is not None and hasattr(spec, "depth") else None
    except (TypeError, ValueError):
        depth = None
    return {"residual": None if residual is None else bool(residual), "depth": depth,
            "preact": bool(getattr(spec, "preact", False)) if spec is not None else None}


def _models(t: Target, o: Options, device: torch.device, *, trained: bool = True
            ) -> tuple[nn.Module, Batch, str, LoadedRun | None]:
    """``(model, batch, state name, run)``: a run's trained net (``o.checkpoint``) on its own test images,
    or a model name at initialisation on ``o.data`` (a run at initialisation with ``trained=False``)."""
    images = int(o.images or 32)
    run = trained_model(t, o.checkpoint, device) if t.is_run else None
    batch = target_batch(t, data=o.data, data_dir=o.data_dir, images=images, seed=o.seed, device=device, run=run)
    if run is not None and trained:
        return run.model, batch, run.checkpoint, run
    model = init_model(t, seed=o.seed if run is None else run.config.seed, num_classes=len(batch.classes),
                       in_chans=batch.raw.shape[1], run=run).to(device)
    return model, batch, "init", run


def _base(t: Target, model: nn.Module, batch, run) -> dict[str, Any]:
    return {"label": t.label, "model": run.config.model if run is not None else t.model, **_describe(model),
            "data": portable_arg(batch.data), "images": len(batch.x)}


def _series_style(m: dict[str, Any], colour) -> dict[str, Any]:
    return {"color": colour, "linestyle": "--" if m.get("residual") is False else "-"}


def _ordered(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [record["measurements"][e["key"]] for e in record["targets"] if e["key"] in record["measurements"]]


# -- gradients ------------------------------------------------------------------------------------
def _measure_gradients(t: Target, o: Options, device: torch.device, out: Path) -> dict[str, Any]:
    model, batch, _, run = _models(t, o, device, trained=False)
    states = {"init": layer_gradient_norms(model, batch.x, batch.y)}
    if run is not None:
        states[run.checkpoint] = layer_gradient_norms(run.model, batch.x, batch.y)
    return {**_base(t, model, batch, run),
            "states": {s: {"layers": [n for n, _ in v], "norms": [x for _, x in v]} for s, v in states.items()}}


def _first_over_last(norms: list[float]) -> float:
    return norms[0] / norms[-1] if norms[-1] > 0 else float("nan")


def _render_gradients(record: dict[str, Any], out: Path) -> Rendered:
    ms = _ordered(record)
    fig = new_figure((8, 4.5))
    ax = fig.add_subplot()
    cols = colours(len(ms))
    for m, c in zip(ms, cols):
        for state, v in m["states"].items():
            style = _series_style(m, c)
            if state != "init":
                style["alpha"] = 0.6
                style["marker"] = "."
            ax.plot(range(1, len(v["norms"]) + 1), v["norms"], label=f"{m['label']} ({state})", **style)
    ax.set_yscale("log")
    ax.set_xlabel("weighted layer (in the order they run; 1 = first conv, last = classifier)")
    ax.set_ylabel("||dL/dW|| (one batch)")
    ax.set_title("Weight-gradient norm per layer")
    ax.legend(fontsize=8)
    save_png(fig, out / "gradients.png")
    findings = []
    init = {m["label"]: m for m in ms}
    plain = {m["depth"]: m for m in ms if m.get("residual") is False}
    res = {m["depth"]: m for m in ms if m.get("residual") is True and not m.get("preact")}
    for d in sorted(set(plain) & set(res)):
        p, r = plain[d]["states"]["init"]["norms"][0], res[d]["states"]["init"]["norms"][0]
        findings.append(f"gradient norm of the first conv at initialisation: {plain[d]['label']} is {_g(p / r)}x "
                        f"{res[d]['label']} ({_g(p)} vs {_g(r)})")
    ratios = ", ".join(f"{label} {_g(_first_over_last(m['states']['init']['norms']))}" for label, m in init.items())
    findings.append(f"first-conv / classifier gradient norm at initialisation: {ratios}")
    for fam, group in (("plain", plain), ("residual", res)):
        depths = sorted(group)
        if len(depths) >= 2:
            lo, hi = group[depths[0]], group[depths[-1]]
            a, b = (_first_over_last(x["states"]["init"]["norms"]) for x in (lo, hi))
            findings.append(f"from {depths[0]} to {depths[-1]} layers the {fam} nets' first-conv / classifier gradient "
                            f"ratio changes {_g(b / a)}x ({_g(a)} -> {_g(b)})")
    for m in ms:
        for state, v in m["states"].items():
            if state != "init":
                findings.append(f"{m['label']} with its {state} weights: first-conv gradient {_g(v['norms'][0])}, "
                                f"first-conv / classifier ratio {_g(_first_over_last(v['norms']))}")
    rows = ["| net | weights | layers | first conv | median layer | classifier | first / classifier |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for m in ms:
        for state, v in m["states"].items():
            n = v["norms"]
            rows.append(f"| {m['label']} | {state} | {len(n)} | {_g(n[0])} | {_g(statistics.median(n))} | {_g(n[-1])} | "
                        f"{_g(_first_over_last(n))} |")
    body = ["## Gradient norm per layer", "", "![gradient norms](gradients.png)", "",
            "Dashed: plain nets; solid: residual nets. Measured on "
            f"{ms[0]['images']} test images of {ms[0]['data']}, batch norm with the batch's statistics (a training "
            "step's view), mean cross-entropy.", "", *rows]
    return Rendered(findings, body)


GRADIENTS = register_kind(Kind(
    "gradients", "Gradient flow: weight-gradient norm of every layer",
    "He et al. 2015 (Sec. 4.2) and Philipp et al. 2018 (exploding gradients with batch norm)",
    "The norm of each conv and fully-connected layer's weight gradient for one batch of real test images, "
    "the network in training mode (batch statistics); model names at initialisation, run directories at "
    "initialisation and with their trained weights.",
    ("data", "images", "seed", "checkpoint"), _measure_gradients, _render_gradients))


# -- shattering -----------------------------------------------------------------------------------
MAX_LAG = 32


def _measure_shattering(t: Target, o: Options, device: torch.device, out: Path) -> dict[str, Any]:
    model, batch, state, run = _models(t, o, device)
    if state == "init":
        calibrate_bn(model, batch.x)
    model.eval()
    if len(batch.x) < 2 * o.lines:
        raise ReslabError(f"--lines {o.lines} needs --images >= {2 * o.lines} (two images per line)")
    acfs, corrs, example = [], [], None
    max_lag = min(MAX_LAG, o.points // 2)
    for i in range(o.lines):
        a, b = batch.x[2 * i], batch.x[2 * i + 1]
        g, grads = line_gradients(model, a, b, int(batch.y[2 * i]), points=o.points)
        acfs.append(autocorrelation(g, max_lag))
        corrs.append(neighbour_correlation(grads))
        if example is None:
            example = (g / g.abs().max().clamp_min(1e-300)).tolist()
    acf = torch.stack(acfs).mean(0)
    return {**_base(t, model, batch, run), "weights": state, "acf": acf.tolist(),
            "acf_lag1": float(acf[1]), "neighbour_correlation": statistics.fmean(corrs),
            "neighbour_correlations": corrs, "example": example,
            "white_noise_acf": white_noise_autocorrelation(o.points, max_lag, seed=o.seed).tolist()}


def _render_shattering(record: dict[str, Any], out: Path) -> Rendered:
    ms = _ordered(record)
    cols = colours(len(ms))
    fig = new_figure((12, 4.2))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for k, (m, c) in enumerate(zip(ms, cols)):
        style = _series_style(m, c)
        ax1.plot([i / (len(m["example"]) - 1) for i in range(len(m["example"]))],
                 [v + 2.2 * k for v in m["example"]], label=m["label"], lw=0.8, **style)
        ax2.plot(range(len(m["acf"])), m["acf"], label=m["label"], **style)
    ax1.set_title("Gradient along a line of inputs (Fig. 1)")
    ax1.set_xlabel("t: x = a + t (b - a)")
    ax1.set_yticks([])
    ax1.legend(fontsize=7)
    ax2.plot(range(len(ms[0]["white_noise_acf"])), ms[0]["white_noise_acf"], color="grey", lw=0.8, label="white noise")
    ax2.axhline(0, color="black", lw=0.5)
    ax2.set_title("Autocorrelation of the gradient (Fig. 2)")
    ax2.set_xlabel("lag (points)")
    ax2.legend(fontsize=7)
    for fam, marker in ((False, "s"), (True, "o"), (None, "^")):
        pts = sorted((m["depth"] or 0, m["neighbour_correlation"]) for m in ms if m.get("residual") is fam)
        if pts:
            name = {False: "plain", True: "residual", None: "other"}[fam]
            ax3.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=name,
                     linestyle="--" if fam is False else "-")
    ax3.set_title("Correlation of neighbouring gradients (Fig. 3)")
    ax3.set_xlabel("depth")
    ax3.set_ylim(-0.1, 1.05)
    ax3.legend(fontsize=7)
    save_png(fig, out / "shattering.png")
    noise = ms[0]["white_noise_acf"][1]
    findings = [f"gradient autocorrelation at lag 1 ({ms[0]['weights'] if ms else ''} weights): "
                + ", ".join(f"{m['label']} {_g(m['acf_lag1'])}" for m in ms) + f" (white noise {_g(noise)})",
                "correlation between the gradients of neighbouring inputs: "
                + ", ".join(f"{m['label']} {_g(m['neighbour_correlation'])}" for m in ms)]
    for fam in (False, True):
        group = sorted((m for m in ms if m.get("residual") is fam and m["depth"]), key=lambda m: m["depth"])
        if len(group) >= 2:
            lo, hi = group[0], group[-1]
            findings.append(f"from {lo['depth']} to {hi['depth']} layers the {'plain' if fam is False else 'residual'} "
                            f"nets' neighbour correlation goes {_g(lo['neighbour_correlation'])} -> "
                            f"{_g(hi['neighbour_correlation'])}")
    rows = ["| net | weights | depth | lag-1 autocorrelation | neighbour correlation |", "|---|---|---:|---:|---:|"]
    rows += [f"| {m['label']} | {m['weights']} | {m['depth'] or '—'} | {_g(m['acf_lag1'])} | {_g(m['neighbour_correlation'])} |"
             for m in ms]
    settings = record.get("settings", {})
    body = ["## Shattered gradients", "", "![shattering](shattering.png)", "",
            f"Left: the derivative of the first image's class logit along the line between two test images "
            f"({settings.get('points')} points, scaled to its largest value); middle: its autocorrelation averaged over "
            f"{settings.get('lines')} lines, with white noise for comparison; right: the mean correlation between the "
            "full gradient vectors at neighbouring points. Batch norm with fixed statistics: a trained net's, or "
            "at initialisation those of the measured test images.", "", *rows]
    return Rendered(findings, body)


SHATTERING = register_kind(Kind(
    "shattering", "Shattered gradients along a line of inputs",
    "Balduzzi et al. 2017, The shattered gradients problem (Figs. 1-3)",
    "The gradient of a class logit with respect to the input, at points along straight lines between real "
    "test images: its autocorrelation (white noise has none) and the correlation between neighbouring points' "
    "gradients; model names at initialisation, run directories with their trained weights.",
    ("data", "images", "seed", "checkpoint", "points", "lines"), _measure_shattering, _render_shattering, images=8))


# -- paths ----------------------------------------------------------------------------------------
def _measure_paths(t: Target, o: Options, device: torch.device, out: Path) -> dict[str, Any]:
    model, batch, state, run = _models(t, o, device)
    blocks = require_blocks(model, t.label)
    if state == "init":
        calibrate_bn(model, batch.x)
    model.eval()
    n = len(blocks)
    grads = path_gradients(model, batch.x, batch.y, samples=o.samples, seed=o.seed)
    dist = path_length_distribution(n)
    total = [grads[k] * math.comb(n, k) for k in range(n + 1)]
    return {**_base(t, model, batch, run), "weights": state, "blocks": n, "distribution": dist,
            "path_gradient": [grads[k] for k in range(n + 1)], "total_gradient": total}


def _central(weights: list[float], share: float = 0.9) -> tuple[int, int]:
    """The shortest range of indices around the largest weight holding ``share`` of the sum."""
    s = sum(weights)
    lo = hi = max(range(len(weights)), key=weights.__getitem__)
    acc = weights[lo]
    while acc < share * s:
        left = weights[lo - 1] if lo > 0 else -1.0
        right = weights[hi + 1] if hi + 1 < len(weights) else -1.0
        if left >= right:
            lo -= 1
            acc += left
        else:
            hi += 1
            acc += right
    return lo, hi


def _render_paths(record: dict[str, Any], out: Path) -> Rendered:
    ms = _ordered(record)
    fig = new_figure((12, 4))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    findings = []
    for m, c in zip(ms, colours(len(ms))):
        n = m["blocks"]
        ks = list(range(n + 1))
        ax1.plot(ks, [p * 2 ** n for p in m["distribution"]], color=c, label=m["label"])
        ax2.plot(ks, m["path_gradient"], color=c, label=m["label"])
        ax3.plot(ks, m["total_gradient"], color=c, label=m["label"])
        p_lo, p_hi = _central(m["distribution"], 0.95)
        g_lo, g_hi = _central(m["total_gradient"], 0.9)
        peak = max(ks, key=m["total_gradient"].__getitem__)
        findings.append(f"{m['label']} ({n} blocks, 2^{n} paths): 95% of paths have length {p_lo}-{p_hi} (mean {n / 2:g}), "
                        f"but 90% of the gradient ({m['weights']} weights) comes from paths of length {g_lo}-{g_hi}, "
                        f"peaking at {peak}; one path of length {n} carries {_g(m['path_gradient'][n] / m['path_gradient'][0])}x "
                        "the gradient of the shortcut-only path" if m["path_gradient"][0] > 0 else "")
    ax1.set_yscale("log")
    ax1.set_title("Number of paths of each length")
    ax2.set_yscale("log")
    ax2.set_title("Gradient norm of one path (Fig. 6a)")
    ax3.set_title("Total gradient of all paths of a length (Fig. 6b)")
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel("path length (residual branches passed)")
        ax.legend(fontsize=7)
    save_png(fig, out / "paths.png")
    settings = record.get("settings", {})
    body = ["## Paths of each length", "", "![paths](paths.png)", "",
            "Left: C(n, k), exact. Middle: the gradient norm at the first block's input through one path of length "
            f"k (mean over {settings.get('samples')} random choices of the k blocks; the backward pass goes through the "
            "branches of the chosen blocks and the shortcuts of the others). Right: that times C(n, k)."]
    return Rendered([f for f in findings if f], body)


PATHS = register_kind(Kind(
    "paths", "Residual nets as ensembles of paths",
    "Veit et al. 2016, Residual networks behave like ensembles of relatively shallow networks (Sec. 3, Fig. 6)",
    "The binomial distribution of path lengths through n residual blocks (closed form), and the gradient that "
    "paths of each length carry to the first block, measured by sampling which blocks the backward pass runs "
    "through.",
    ("data", "images", "seed", "checkpoint", "samples"), _measure_paths, _render_paths, images=16))


# -- blocks ---------------------------------------------------------------------------------------
OFF = 0.1  # a block whose branch adds under 10% of its input's norm is "nearly switched off"


def _measure_blocks(t: Target, o: Options, device: torch.device, out: Path) -> dict[str, Any]:
    model, batch, state, run = _models(t, o, device)
    if state == "init":
        calibrate_bn(model, batch.x)
    names, ratios = block_ratios(model, batch.x)
    q = torch.quantile(ratios, torch.tensor([0.1, 0.5, 0.9], dtype=ratios.dtype), dim=0)
    shortcuts = [has_shortcut(b) for _, b in require_blocks(model, t.label, shortcuts=False)]
    return {**_base(t, model, batch, run), "weights": state, "blocks": names, "shortcut": shortcuts,
            "mean": ratios.mean(0).tolist(), "p10": q[0].tolist(), "median": q[1].tolist(), "p90": q[2].tolist(),
            "off_share": (ratios < OFF).double().mean(0).tolist(), "per_image": ratios.tolist()}


def _render_blocks(record: dict[str, Any], out: Path) -> Rendered:
    ms = _ordered(record)
    fig = new_figure((8, 4.2))
    ax = fig.add_subplot()
    findings = []
    for m, c in zip(ms, colours(len(ms))):
        xs = list(range(1, len(m["median"]) + 1))
        ax.plot(xs, m["median"], color=c, label=f"{m['label']} (median)", linestyle="--" if m["residual"] is False else "-")
        ax.fill_between(xs, m["p10"], m["p90"], color=c, alpha=0.2)
        off = [i + 1 for i, v in enumerate(m["median"]) if v < OFF]
        lo = min(range(len(m["median"])), key=m["median"].__getitem__)
        hi = max(range(len(m["median"])), key=m["median"].__getitem__)
        findings.append(f"{m['label']} ({m['weights']} weights): median ||F(x)||/||x|| over {len(m['median'])} blocks is "
                        f"{_g(statistics.median(m['median']))} (block {lo + 1} lowest, {_g(m['median'][lo])}; block {hi + 1} "
                        f"highest, {_g(m['median'][hi])}); {len(off)} block(s) nearly switched off (median under {OFF})"
                        + (f": {', '.join(map(str, off))}" if off else ""))
    ax.axhline(OFF, color="grey", lw=0.6, linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("residual block (in the order they run)")
    ax.set_ylabel("||F(x)|| / ||x|| per image")
    ax.set_title("Residual branch size relative to the block input (band: 10-90% of images)")
    ax.legend(fontsize=8)
    save_png(fig, out / "blocks.png")
    rows = ["| net | block | median | 10% | 90% | images under 0.1 |", "|---|---|---:|---:|---:|---:|"]
    for m in ms:
        for i, name in enumerate(m["blocks"]):
            rows.append(f"| {m['label']} | {i + 1} `{name}` | {_g(m['median'][i])} | {_g(m['p10'][i])} | {_g(m['p90'][i])} | "
                        f"{100 * m['off_share'][i]:.0f}% |")
    body = ["## Skip or transform", "", "![blocks](blocks.png)", "",
            f"Measured per image on {ms[0]['images']} test images (evaluation mode); x is the block's input, F(x) its "
            "residual branch's output before the addition.", "", *rows]
    return Rendered(findings, body)


BLOCKS = register_kind(Kind(
    "blocks", "Skip or transform: residual branch size per block",
    "He et al. 2015 (Sec. 4.2: residual functions are generally closer to zero) and Veit et al. 2016",
    "For each residual block and each test image, ||F(x)|| / ||x||: how much the block's residual branch "
    "changes its input. Near 0 the net takes the shortcut; near 1 the block transforms.",
    ("data", "images", "seed", "checkpoint"), _measure_blocks, _render_blocks, images=200))


# -- lesion ---------------------------------------------------------------------------------------
def _measure_lesion(t: Target, o: Options, device: torch.device, out: Path) -> dict[str, Any]:
    model, batch, state, run = _models(t, o, device)
    blocks = require_blocks(model, t.label, shortcuts=False)
    n = len(blocks)
    base = error_rate(model, batch.x, batch.y)
    single = lesion_errors(model, batch.x, batch.y, [[i] for i in range(n)])
    ks = list(range(1, min(10, n) + 1))
    rand = random_lesion_errors(model, batch.x, batch.y, ks, samples=o.samples, seed=o.seed)
    return {**_base(t, model, batch, run), "weights": state, "blocks": [nm for nm, _ in blocks],
            "shortcut": any(has_shortcut(b) for _, b in blocks), "classes": len(batch.classes), "error": base,
            "single": single, "random": {str(k): v for k, v in rand.items()}}


def _render_lesion(record: dict[str, Any], out: Path) -> Rendered:
    ms = _ordered(record)
    fig = new_figure((11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    findings = []
    for m, c in zip(ms, colours(len(ms))):
        style = {"color": c, **({"linestyle": "--"} if not m["shortcut"] else {})}
        ax1.plot(range(1, len(m["single"]) + 1), m["single"], marker=".", label=m["label"], **style)
        ax1.axhline(m["error"], lw=0.6, **style)
        ks = sorted(int(k) for k in m["random"])
        means = [statistics.fmean(m["random"][str(k)]) for k in ks]
        ax2.plot([0, *ks], [m["error"], *means], marker="o", label=m["label"], **style)
        chance = 100 * (1 - 1 / m["classes"])
        kind = "residual" if m["shortcut"] else "plain"
        text = (f"{m['label']} ({kind}, {m['images']} test images): error {_g(m['error'])}% intact; deleting one block "
                f"gives {_g(min(m['single']))}-{_g(max(m['single']))}% (mean {_g(statistics.fmean(m['single']))}%)")
        if ks:
            text += f"; deleting {ks[-1]} random blocks {_g(means[-1])}% (chance {_g(chance)}%)"
        if not m["shortcut"]:
            text += "; a plain net has one path, so deleting a block breaks the chain"
        findings.append(text)
    ax1.set_xlabel("deleted block")
    ax1.set_ylabel("test error (%)")
    ax1.set_title("Deleting single blocks (Veit et al. Fig. 3)")
    ax2.set_xlabel("blocks deleted at random")
    ax2.set_title("Deleting k random blocks (Fig. 5a), mean")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
    save_png(fig, out / "lesion.png")
    body = ["## Lesions", "", "![lesion](lesion.png)", "",
            "A deleted block keeps its shortcut (its residual branch outputs zeros). Left: each block deleted alone "
            "(horizontal lines: the intact net); right: the mean over random sets of k deleted blocks. Dashed: plain "
            "nets, whose deleted block passes nothing on."]
    return Rendered(findings, body)


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=xs.__getitem__)
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (ties by mean rank); nan when either side is constant."""
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else float("nan")


def _blocks_vs_lesion(records: dict[str, dict[str, Any]]) -> list[str]:
    """Does a block's branch size predict what deleting it costs? For every run measured by both."""
    blocks = {k: (name, m) for name, r in records.items() if r["analysis"] == "blocks" for k, m in r["measurements"].items()}
    lines = []
    for name, r in records.items():
        if r["analysis"] != "lesion":
            continue
        for key, m in r["measurements"].items():
            if key not in blocks or len(blocks[key][1]["median"]) != len(m["single"]):
                continue
            b = blocks[key][1]
            cost = [e - m["error"] for e in m["single"]]
            rho = spearman(b["median"], cost)
            if math.isnan(rho):
                lines.append(f"- {m['label']}: deleting any one of its {len(cost)} blocks costs the same "
                             f"({_g(cost[0])} points of test error, {name}): the branch sizes ({blocks[key][0]}) cannot "
                             "predict it")
                continue
            lines.append(f"- {m['label']}: Spearman rho = {_g(rho)} between a block's median ||F(x)||/||x|| ({blocks[key][0]}) "
                         f"and the test error its deletion adds ({name}), over {len(cost)} blocks")
    if not lines:
        return []
    return ["## Skip or transform vs lesion", "",
            "Does the size of a block's residual branch predict what deleting it costs (rho near 1: the nearly "
            "switched-off blocks are the cheap ones to delete)?", "", *lines, ""]


CROSS.append(_blocks_vs_lesion)


LESION = register_kind(Kind(
    "lesion", "Lesion study: deleting residual blocks at test time",
    "Veit et al. 2016 (Sec. 4, Figs. 3 and 5)",
    "The test error of a trained net with each residual block deleted alone (only its shortcut left) and with "
    "k random blocks deleted.",
    ("images", "seed", "checkpoint", "samples"), _measure_lesion, _render_lesion, needs_run=True,
    images=1000))


# -- cam ------------------------------------------------------------------------------------------
def _measure_cam(t: Target, o: Options, device: torch.device, out: Path) -> dict[str, Any]:
    from PIL import Image

    from ..data.decode import open_image
    from ..io import atomic_path
    from ..predict import image_path
    from .cam import grad_cam, last_stage, overlay

    if o.image is None:
        raise ReslabError("cam needs an image: reslab analyze cam RUN IMAGE")
    run = trained_model(t, o.checkpoint, device)
    raw = run.preprocess(open_image(str(image_path(o.image)), "L" if run.channels == 1 else "RGB"))
    x = run.normalizer.to(device)(raw[None].to(device))[0]
    if o.target_class is not None and not 0 <= o.target_class < len(run.classes):
        raise ReslabError(f"--class {o.target_class} is out of range: the run has {len(run.classes)} classes (0-"
                          f"{len(run.classes) - 1})")
    cam, cls, small = grad_cam(run.model, x, o.target_class)
    with torch.no_grad():
        probs = torch.softmax(run.model(x[None]).float(), 1)[0]
    picture = overlay(raw, cam.cpu())
    with atomic_path(out / "overlay.png") as tmp:
        Image.fromarray(picture.numpy()).save(tmp, format="PNG")
    top = probs.topk(min(3, len(run.classes)))
    return {"label": t.label, "model": run.config.model, "weights": run.checkpoint, "image": Path(o.image).name,
            "layer": last_stage(run.model)[0], "class": run.classes[cls], "class_index": cls,
            "probability": float(probs[cls]), "top": [[run.classes[i], float(p)] for p, i in zip(*top)],
            "map": small.cpu().tolist(), "peak": list(divmod(int(cam.argmax()), cam.shape[1])),
            "size": list(cam.shape)}


def _render_cam(record: dict[str, Any], out: Path) -> Rendered:
    m = _ordered(record)[0]
    h, w = m["size"]
    row, col = m["peak"]
    where = ("top" if row < h / 3 else "bottom" if row >= 2 * h / 3 else "middle") + "-" + \
            ("left" if col < w / 3 else "right" if col >= 2 * w / 3 else "centre")
    area = sum(v > 0 for r in m["map"] for v in r) / max(1, sum(len(r) for r in m["map"]))
    findings = [f"{m['label']} explains class {m['class']} (p = {_g(m['probability'])}) on {m['image']} mostly from the "
                f"{where} of the image (peak at row {row}, column {col} of {h}x{w}); {100 * area:.0f}% of "
                f"{m['layer']}'s {len(m['map'])}x{len(m['map'][0])} positions count for it"]
    body = ["## Grad-CAM", "", "![Grad-CAM overlay](overlay.png)", "",
            f"The class score's gradient averaged over each channel of `{m['layer']}` weights its feature maps; the "
            "ReLU of their sum, upsampled bilinearly, is drawn over the network's input (red: most evidence). "
            "Top classes: " + ", ".join(f"{c} {p:.3f}" for c, p in m["top"]) + "."]
    return Rendered(findings, body)


CAM = register_kind(Kind(
    "cam", "Grad-CAM: where the net looks",
    "Selvaraju et al. 2017, Grad-CAM (Eqs. 1-2)",
    "A class-discriminative heat map over one image from a trained classifier's last stage.",
    ("checkpoint", "image", "target_class"), _measure_cam, _render_cam, needs_run=True, one_target=True))


# -- landscape ------------------------------------------------------------------------------------
def _measure_landscape(t: Target, o: Options, device: torch.device, out: Path) -> dict[str, Any]:
    import json

    from ..io import atomic_write_text
    from .landscape import HESSIAN_IMAGES, check_memory, filter_normalised_direction, hessian_extremes, loss_at

    model, batch, state, run = _models(t, o, device)
    check_memory(model, batch.x, images=len(batch.x), directions=2 if o.two_d else 1, device=device)
    gen = torch.Generator().manual_seed(o.seed)
    dirs = [filter_normalised_direction(model, gen) for _ in range(2 if o.two_d else 1)]
    alphas = [o.span * (2 * i / (o.grid - 1) - 1) for i in range(o.grid)]
    cache = out / f"cells-{t.key.replace('/', '_').replace(':', '-')}.json"
    rank, world = _rank_world()
    try:  # grid cells of an interrupted measurement, with the same settings
        cells: dict[str, list[float]] = json.loads(cache.read_text())
    except (OSError, ValueError):
        cells = {}
    coords = [(i, j) for i in range(o.grid) for j in (range(o.grid) if o.two_d else [0])]
    todo = [c for c in coords if f"{c[0]},{c[1]}" not in cells]
    if cells and rank == 0:
        print(f"{t.label}: {len(cells)} of {len(coords)} grid cells cached, {len(todo)} to go", flush=True)
    _barrier(world)  # every process has read the cache: process 0 may write it now
    mine = todo[rank::world]  # torchrun: each process its share of the cells
    own = cache if rank == 0 else cache.with_name(f"{cache.stem}.rank{rank}.json")
    new: dict[str, list[float]] = {}
    for n, (i, j) in enumerate(mine, start=1):
        new[f"{i},{j}"] = list(loss_at(model, dirs, [alphas[i], alphas[j]] if o.two_d else [alphas[i]],
                                       batch.x, batch.y))
        if n % 5 == 0 or n == len(mine):
            atomic_write_text(own, json.dumps({**cells, **new} if rank == 0 else new))
    cells.update(new)
    _barrier(world)
    if rank != 0:
        return {}
    for r in range(1, world):  # the other processes' cells
        part = cache.with_name(f"{cache.stem}.rank{r}.json")
        try:
            cells.update(json.loads(part.read_text()))
        except (OSError, ValueError):
            pass
    for i, j in [c for c in coords if f"{c[0]},{c[1]}" not in cells]:  # a share that went missing
        cells[f"{i},{j}"] = list(loss_at(model, dirs, [alphas[i], alphas[j]] if o.two_d else [alphas[i]], batch.x, batch.y))
    atomic_write_text(cache, json.dumps(cells))
    for r in range(1, world):
        cache.with_name(f"{cache.stem}.rank{r}.json").unlink(missing_ok=True)
    hx, hy = batch.x[:HESSIAN_IMAGES], batch.y[:HESSIAN_IMAGES]
    lam_max, lam_min = hessian_extremes(model, hx, hy, iters=o.hessian_iters, seed=o.seed)
    loss = [[cells[f"{i},{j}"][0] for j in (range(o.grid) if o.two_d else [0])] for i in range(o.grid)]
    err = [[cells[f"{i},{j}"][1] for j in (range(o.grid) if o.two_d else [0])] for i in range(o.grid)]
    return {**_base(t, model, batch, run), "weights": state, "alphas": alphas, "loss": loss, "error": err,
            "two_d": o.two_d, "hessian_images": len(hx), "lambda_max": lam_max, "lambda_min": lam_min,
            "ratio": abs(lam_min / lam_max) if lam_max else float("nan")}


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _render_landscape(record: dict[str, Any], out: Path) -> Rendered:
    ms = _ordered(record)
    two_d = ms[0]["two_d"]
    findings = []
    if two_d:
        fig = new_figure((5 * len(ms), 4.4))
        axes = fig.subplots(1, len(ms), squeeze=False)[0]
        for ax, m in zip(axes, ms):
            a = m["alphas"]
            cs = ax.contour(a, a, [list(r) for r in zip(*m["loss"])], levels=20)
            ax.clabel(cs, fontsize=6)
            ax.plot([0], [0], "k+")
            ax.set_title(f"{m['label']}: loss (2-D, filter-normalised)")
            ax.set_xlabel("alpha (direction 1)")
            ax.set_ylabel("beta (direction 2)")
    else:
        fig = new_figure((8, 4.2))
        ax = fig.add_subplot()
        for m, c in zip(ms, colours(len(ms))):
            ax.plot(m["alphas"], [r[0] for r in m["loss"]], color=c, label=m["label"],
                    linestyle="--" if m.get("residual") is False else "-")
        ax.set_xlabel("alpha (filter-normalised random direction)")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.set_title("Loss along a random direction (Li et al. 2018)")
        ax.legend(fontsize=8)
    save_png(fig, out / "landscape.png")
    for m in ms:
        line = [r[len(r) // 2] for r in m["loss"]]  # the alpha axis through the centre
        centre = len(line) // 2
        is_min = all(line[centre] <= v for v in line)
        findings.append(f"{m['label']} ({m['weights']} weights): loss {_g(line[centre])} at the centre, "
                        f"{_g(line[0])} / {_g(line[-1])} at alpha = {_g(m['alphas'][0])} / {_g(m['alphas'][-1])}; the centre is "
                        f"{'the minimum' if is_min else 'not the minimum'} of the line; Hessian |lambda_min / lambda_max| = "
                        f"{_g(m['ratio'])} (power iteration: lambda_max {_g(m['lambda_max'])}, lambda_min at most "
                        f"{_g(m['lambda_min'])})")
    settings = record.get("settings", {})
    body = ["## Loss landscape", "", "![landscape](landscape.png)", "",
            f"Loss on {ms[0]['images']} test images at theta + alpha d{' + beta d2' if two_d else ''} for {settings.get('grid')} "
            f"values of each coordinate in [-{settings.get('span')}, {settings.get('span')}]; every filter of each random "
            "direction scaled to the norm of the same filter of the weights, batch-norm parameters and biases left "
            f"unperturbed. Hessian eigenvalues by power iteration on {ms[0]['hessian_images']} images: the largest "
            "first, then the other end of the spectrum from the Hessian shifted by it; a few iterations only bound "
            "lambda_min from above (Li et al. use a Lanczos solver), so a ratio near 0 says little beyond 'no large "
            "negative curvature found'."]
    return Rendered(findings, body)


LANDSCAPE = register_kind(Kind(
    "landscape", "Loss landscape along filter-normalised directions",
    "Li et al. 2018, Visualizing the loss landscape of neural nets (Secs. 4, 6, 7)",
    "The loss of a trained net along one (or two, --2d) random filter-normalised directions around its weights, "
    "grid cells cached so an interrupted run resumes, and the ratio of the Hessian's extreme eigenvalues.",
    ("images", "seed", "checkpoint", "grid", "span", "two_d", "hessian_iters"), _measure_landscape, _render_landscape,
    needs_run=True, images=500, parallel=True))
