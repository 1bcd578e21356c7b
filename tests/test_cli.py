"""The command line as a user meets it: fast help (no torch before parsing) and a meaning beside every flag."""
import subprocess
import sys

import pytest

from innovwin import config
from innovwin.cli import build_parser


def test_every_config_field_has_help():
    assert set(config.HELP) == set(config.field_names())
    assert all(text.strip() for text in config.HELP.values())


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["sweep", "--help"], ["basins", "--help"],
                                  ["predict", "--help"]])
def test_help_parses_without_importing_torch(argv):
    code = ("import sys\nfrom innovwin.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('torch' if 'torch' in sys.modules else 'no torch')" % argv)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().endswith("no torch"), result.stderr[-500:]
    assert "usage: innovwin" in result.stdout


def test_train_help_shows_meaning_choices_and_readable_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--arch {dit,gpt}" in text and "--dtype {auto,float32,bfloat16}" in text
    assert "a copy when d(NN1) < ratio_copy * d(NN2) [eval.ratio_copy, default: 0.333333]" in text
    assert "0.3333333333333333" not in text
