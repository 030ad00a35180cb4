"""Headless Chromium in JupyterLab. A learner's view: the student notebook opens with nbgrader's
Validate button. An instructor's view: the master opens with nbgrader's Create Assignment panel,
which reads the cells' grading metadata. Budget: about 60 s (one server start, two page loads)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from grader.course import course_dir as course_folder

NOTEBOOK = course_folder.NOTEBOOK
MASTER_COPY = f"master/{NOTEBOOK}"  # where the server finds the master, beside the student copy
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(
    url: str,
    process: subprocess.Popen,
    timeout: float = 120,
    *,
    what: str = "jupyter lab",
    log: Path | None = None,
) -> None:
    """Return once ``url`` answers 200; raise, with the end of ``log``, when ``process`` exits
    or ``timeout`` passes."""
    tail = (lambda: "\n" + log.read_text()[-3000:]) if log is not None else (lambda: "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}{tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{what} did not answer {url} within {timeout} s{tail()}")


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 (random port, token) serving copies of the student notebook and
    (in ``master/``) the master."""
    tmp_path = tmp_path_factory.mktemp("lab")
    shutil.copy(course_folder.release_path(), tmp_path / NOTEBOOK)
    (tmp_path / "master").mkdir()
    shutil.copy(course_folder.master_path(), tmp_path / MASTER_COPY)
    port, token = free_port(), "lab-test-token"
    bin_dir = Path(sys.executable).parent
    env = dict(
        os.environ,
        PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),  # no personal settings
    )
    log = open(tmp_path / "jupyter.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            str(bin_dir / "jupyter"),
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
            "--ServerApp.port_retries=0",
            "--allow-root",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", process)
        yield f"http://127.0.0.1:{port}", token
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            browser.close()


def open_notebook(browser, jupyter_lab, path: str):
    """A page showing the notebook at ``path`` (relative to the server's root), cells rendered."""
    from playwright.sync_api import expect

    base, token = jupyter_lab
    page = browser.new_page()
    page.goto(f"{base}/lab/tree/{path}?token={token}", timeout=120_000)
    notebook = page.locator(".jp-NotebookPanel")
    expect(notebook).to_be_visible(timeout=120_000)
    expect(page.locator(".jp-NotebookPanel .jp-Cell").first).to_be_visible(timeout=60_000)
    heading = notebook.get_by_role("heading", name="Transformers from scratch")
    expect(heading.first).to_be_visible(timeout=60_000)
    expect(notebook.get_by_text("def multihead_attention").first).to_be_attached()
    return page


@pytest.mark.timeout(300)
def test_student_notebook_opens_in_jupyterlab_with_validate_button(browser, jupyter_lab):
    from playwright.sync_api import expect

    page = open_notebook(browser, jupyter_lab, NOTEBOOK)
    # nbgrader's labextension adds Validate to the notebook's toolbar
    notebook = page.locator(".jp-NotebookPanel")
    validate = notebook.get_by_role("toolbar").get_by_role("button", name="Validate")
    expect(validate).to_be_visible(timeout=60_000)


@pytest.mark.timeout(300)
def test_master_opens_with_the_create_assignment_panel(browser, jupyter_lab):
    from playwright.sync_api import expect

    page = open_notebook(browser, jupyter_lab, MASTER_COPY)
    # nbgrader's labextension: a right-sidebar panel that edits each cell's grading metadata
    panel = page.locator(".jp-SideBar .lm-TabBar-tab[title='Nbgrader Create Assignment']")
    expect(panel).to_be_visible(timeout=60_000)
    panel.click()
    total = page.get_by_text("Total points:").locator("xpath=..").locator("input")
    expect(total).to_have_value("100", timeout=60_000)  # Task 1: 60 points, Task 2: 40
