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
