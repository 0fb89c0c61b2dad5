"""The command line end to end on the tiny checkpoint, in a subprocess."""

import subprocess
import sys

import numpy as np
import pytest
from t2s_helpers import REF_TEXT, S1, TEXT, TINY

from conftest import server_env
from fish_speech.models.text2semantic.inference import parse_args


def test_cli_writes_recorded_greedy_codes(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "fish_speech.models.text2semantic.inference",
        "--text",
        TEXT,
        "--prompt-text",
        REF_TEXT,
        "--prompt-tokens",
        str(S1 / "reference_codes.npy"),
        "--checkpoint-path",
        str(TINY),
        "--device",
        "cpu",
        "--precision",
        "float32",
        "--max-new-tokens",
        "16",
        "--top-p",
        "1e-9",
        "--repetition-penalty",
        "1.0",
        "--seed",
        "42",
    ]
    # server_env puts this checkout first on the path (cwd is elsewhere).
    subprocess.run(cmd, cwd=tmp_path, env=server_env(), check=True, timeout=120)
    codes = np.load(tmp_path / "codes_0.npy")
    expected = np.load(S1 / "generate_greedy.npz")["codes_generate_long"]
    np.testing.assert_array_equal(codes, expected)


def test_cli_rejects_unpaired_references(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--text", TEXT, "--prompt-text", REF_TEXT, "--checkpoint-path", str(TINY)])
    assert "--prompt-tokens" in capsys.readouterr().err
