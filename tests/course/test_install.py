"""What `make lab` and `make test` install, read from make's own dry run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def recipe(target: str) -> str:
    """Every command ``make target`` would run on a fresh clone (-B: nothing is up to date)."""
    done = subprocess.run(
        ["make", "-n", "-B", target], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout


def test_make_lab_installs_only_what_the_notebook_needs() -> None:
    lab = recipe("lab")
    assert 'pip install --no-compile "torch==' in lab
    assert 'pip install --no-compile -e ".[lab]"' in lab
    assert re.findall(r"-e \"\.\[(.*?)\]\"", lab) == ["lab"]  # no test tools, no SDK
    assert "compileall" not in lab  # bytecode only for what a learner's runs import
    # As root, JupyterLab refuses to start unless told it may.
    assert ("jupyter lab --allow-root" in lab) == (os.geteuid() == 0)


def test_make_test_and_install_add_the_test_tools_and_the_sdk() -> None:
    for target in ("test", "install"):
        assert 'pip install --no-compile -e ".[lab,dev,sagemaker]"' in recipe(target)
        assert "-m compileall" in recipe(target)  # the tests' many processes start from bytecode
