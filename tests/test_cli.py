"""`nncc build`: the command users run on a model file."""
import subprocess
import sys
from pathlib import Path

import pytest

from nncc.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_build_writes_the_c_the_library_the_report_and_the_graph(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["build", str(EXAMPLES / "regression.py"), "--out", str(out), "--check", "--steps", "3"]) == 0
    for name in ("regression.c", "regression.h", "libregression.so", "report.txt", "train_graph.dot"):
        assert (out / name).stat().st_size > 0, name
    printed = capsys.readouterr().out
    assert "nncc: model 'regression'" in printed and "OK: within float32 tolerance" in printed
    assert (out / "report.txt").read_text().startswith("nncc: model 'regression'")
    assert (out / "train_graph.dot").read_text().startswith("digraph")


def test_team_flag_decides_the_team_step(tmp_path, capsys):
    """regression.py (W1's shape) is a team step by default; --team off makes none, --team on
    forces one on a batch too small for the automatic choice."""
    for flags, team in (([], True), (["--team", "off"], False), (["--batch-size", "8", "--team", "on"], True),
                        (["--batch-size", "8"], False)):
        assert main(["build", str(EXAMPLES / "regression.py"), "--out", str(tmp_path), *flags]) == 0
        assert ("  team step " in capsys.readouterr().out) == team, flags


def test_train_prints_a_falling_loss_per_epoch(tmp_path, capsys):
    assert main(["build", str(EXAMPLES / "regression.py"), "--out", str(tmp_path), "--train", "--epochs", "3"]) == 0
    losses = [float(line.split("loss")[1].split()[0]) for line in capsys.readouterr().out.splitlines()
              if line.startswith("epoch ")]
    assert len(losses) == 3 and losses[-1] < losses[0], losses


@pytest.mark.parametrize("contents, message", [
    (None, "no such model file"),
    ("x = 1\n", "defines neither `graph` nor `model()`"),
    ("import networkx as nx\ngraph = nx.DiGraph()\ngraph.add_node('x', op='input', shape=(None, 3))\n"
     "graph.add_node('loss', op='no_such_op')\ngraph.add_edge('x', 'loss', arg=0)\n", "no_such_op"),
])
def test_a_bad_model_file_is_one_clear_line(tmp_path, contents, message):
    path = tmp_path / "model.py"
    if contents is not None:
        path.write_text(contents)
    with pytest.raises(SystemExit) as exit_:
        main(["build", str(path), "--out", str(tmp_path / "out")])
    assert message in str(exit_.value) and str(path) in str(exit_.value)


def test_help_explains_the_command_and_its_environment():
    out = subprocess.run([sys.executable, "-m", "nncc", "build", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for text in ("model.py must define", "--check", "--train", "--team", "examples:", "CC ", "NNCC_CACHE_DIR"):
        assert text in out, text
