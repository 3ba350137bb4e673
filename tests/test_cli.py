"""The `reslab` command as a user runs it."""

import subprocess
import sys

import pytest

from reslab.cli import main


def test_models_lists_matching_names(capsys):
    assert main(["models", "resnet5*"]) == 0
    out = capsys.readouterr().out
    assert "resnet50" in out and "resnet56" in out and "resnet20" not in out


def test_info_prints_stage_table_and_totals(capsys):
    assert main(["info", "resnet56"]) == 0
    out = capsys.readouterr().out
    for row in ("stem", "stages.0", "stages.1", "stages.2", "head", "total"):
        assert row in out
    assert "853,018" in out  # the measured parameter count, also in Table 6 as 0.85M
    assert "64x8x8" in out


def test_info_overrides(capsys):
    assert main(["info", "resnet50", "--arch", "stride_in=3x3", "--input-size", "224"]) == 0
    assert "4.09G" in capsys.readouterr().out  # v1.5 costs more than the paper's 3.8G


@pytest.mark.parametrize("argv,needle", [
    (["info", "resnt50"], "did you mean resnet50"),
    (["info", "resnet50", "--arch", "colour=red"], "does not accept 'colour'"),
    (["info", "resnet50", "--input-size", "1,224,224"], "expects input of shape"),
    (["info", "resnet50", "--input-size", "big"], "--input-size"),
    (["models", "zzz*"], "no model matches"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_runs_as_a_process():
    proc = subprocess.run([sys.executable, "-m", "reslab", "info", "resnet999"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("reslab: error: unknown model 'resnet999'")
    assert "Traceback" not in proc.stderr


def _options():
    """(subcommand, action) for every argument of every subcommand, from the parser itself."""
    import argparse

    from reslab.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                yield name, action


def test_every_option_has_help_a_readable_metavar_and_its_default():
    seen, bad = set(), []
    for name, action in _options():
        seen.add(name)
        flag = f"{name} {'/'.join(action.option_strings) or action.dest}"
        text = (action.help or "").strip()
        if not text:
            bad.append(f"{flag}: no help")
        takes_value = action.nargs != 0
        if action.option_strings and takes_value:
            # argparse's own metavar is the dest upper-cased: CFG_EPOCHS, DATA_DIR, BATCH_SIZE
            metavar = str(action.metavar or ("{...}" if action.choices else action.dest.upper()))
            if "CFG" in metavar or (action.metavar is None and not action.choices and "_" in action.dest):
                bad.append(f"{flag}: metavar {metavar}")
            if "default" not in text:
                bad.append(f"{flag}: default not shown")
        elif not action.option_strings and action.nargs == "?" and "default" not in text:
            bad.append(f"{flag}: optional positional, default not shown")
    assert {"train", "eval", "predict", "demo", "report", "recipes", "reproduce", "info", "models"} <= seen
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("value", ["3,4,6,3", "(3,4,6,3)", "[3,4,6,3]", "3 4 6 3", " 3, 4, 6, 3 "])
def test_arch_lists_in_the_forms_people_type(capsys, value):
    from reslab.cli import parse_sets

    assert parse_sets([f"layers={value}"], "--arch") == {"layers": (3, 4, 6, 3)}
    assert main(["info", "resnet18", "--arch", f"layers={value}"]) == 0
    ours = capsys.readouterr().out.splitlines()
    assert main(["info", "resnet34"]) == 0
    assert ours[1:] == capsys.readouterr().out.splitlines()[1:]  # all but the title line: resnet34's table


def test_set_and_arch_lists_reach_the_config(capsys):
    import yaml

    assert main(["train", "resnet18", "--arch", "layers=(3,4,6,3)", "--set", "milestones=30,60", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model_args"]["layers"] == [3, 4, 6, 3] and cfg["milestones"] == [30, 60]


def test_other_values_keep_their_types():
    from reslab.cli import parse_sets

    got = parse_sets(["stride_in=3x3", "lr=0.1", "amp=true", "data=imagefolder:my images/cats", "nonlocal_after=((2,4),)",
                      "scale_range=0.08,1.0", "title=two words"])
    assert got == {"stride_in": "3x3", "lr": 0.1, "amp": True, "data": "imagefolder:my images/cats",
                   "nonlocal_after": ((2, 4),), "scale_range": (0.08, 1.0), "title": "two words"}


@pytest.mark.parametrize("argv,needle", [
    (["info", "resnet18", "--arch", "layers=3,4,x"], "--arch layers=3,4,x: a list of numbers must hold numbers only"),
    (["info", "resnet18", "--arch", "layers=[3,4"], "--arch layers=[3,4: unbalanced brackets"),
    (["info", "resnet18", "--arch", "layers=abc"], "--arch layers=abc: layers is a list of numbers, e.g. layers=2,2,2,2"),
    (["train", "resnet18", "--arch", "layers=abc", "--print-config"], "layers is a list of numbers"),
    (["train", "resnet18", "--set", "milestones=(30,x", "--print-config"], "--set milestones=(30,x: unbalanced"),
])
def test_bad_list_values_are_one_clear_line(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "e.g." in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_recipes_list_whole_first_sentences(capsys, monkeypatch):
    import re
    from importlib import resources

    from reslab.config import list_recipes

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    entries = re.split(r"\n(?=\S)", out.split("\n\n")[0].strip())
    assert [e.split()[0] for e in entries] == list_recipes()
    for entry in entries:
        assert max(len(line) for line in entry.splitlines()) <= 80
        name, text = entry.split(None, 1)
        text = " ".join(text.split())
        header = " ".join(line.lstrip("#").strip() for line in
                          (resources.files("reslab") / "recipes" / f"{name}.yaml").read_text().splitlines()
                          if line.startswith("#"))
        assert header.startswith(text) and text.endswith((".", "!", "?")), f"{name}: {text!r} ends mid-sentence"
        assert not text.endswith(("al.", "Sec.")) and len(text) > 40


def test_recipes_name_prints_the_whole_recipe(capsys):
    from importlib import resources

    assert main(["recipes", "paper_cifar10"]) == 0
    assert capsys.readouterr().out == (resources.files("reslab") / "recipes" / "paper_cifar10.yaml").read_text()
