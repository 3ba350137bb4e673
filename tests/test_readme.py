"""The README stays true: its model table lists exactly the registered models."""

import re
from pathlib import Path

import reslab

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_model_table_lists_every_registered_model():
    text = README.read_text()
    block = text.split("<!-- model-table:start -->")[1].split("<!-- model-table:end -->")[0]
    names = re.findall(r"^\| (\w+) \|", block, flags=re.M)
    names = [n for n in names if n != "model"]
    assert names == reslab.list_models(), "run: python scripts/model_table.py"


def test_readme_first_command_is_the_demo():
    commands = re.findall(r"^reslab \w+", README.read_text(), flags=re.M)
    assert commands[0] == "reslab demo"
