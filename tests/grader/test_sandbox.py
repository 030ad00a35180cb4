"""The sandbox's walls, checked with small programs run through the real bwrap command line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from grader.sandbox import launch as sandbox

if sandbox.bwrap_executable() is None:
    if os.environ.get("CI"):
        pytest.fail("bubblewrap (bwrap) is required in CI", pytrace=False)
    pytest.skip("bubblewrap (bwrap) is not installed", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
SLOT = 7  # a parallel-job slot no other test uses


def _prelude(processes: int = 64) -> str:
    """What the probe does first: take the sandbox's user id, bound its processes."""
    uid = sandbox.sandbox_uid(SLOT)
    become = f"os.setgroups([]); os.setgid({uid}); os.setuid({uid})\n" if uid else ""
    return (
        "import json, os, resource, socket, sys, time\n"
        + become
        + f"resource.setrlimit(resource.RLIMIT_NPROC, ({processes}, {processes}))\n"
    )


def run_inside(code: str, tmp_path: Path, **kw) -> dict:
    """Run ``code`` in a sandbox whose scratch folder is under tmp_path; it prints JSON."""
    scratch = tmp_path / f"scratch-{time.monotonic_ns()}"
    sandbox.prepare_scratch(scratch, SLOT, sandboxed=True)
    command = sandbox.bwrap_command(
        [sys.executable, "-I", "-c", _prelude(**kw) + code], scratch, SLOT
    )
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ.get("PATH", ""), "GRADER_SECRET": "s3cr3t"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_only_public_code_is_visible(tmp_path) -> None:
    course = tmp_path / "course"
    (course / "submitted" / "ada").mkdir(parents=True)
    (course / "gradebook.db").write_text("secret")
    paths = {
        "solutions": str(REPO / "solutions"),
        "tests": str(REPO / "tests"),
        "grader": str(REPO / "grader" / "judge" / "grade.py"),
        "former": str(REPO / "former"),
        "course": str(course),
        "gradebook": str(course / "gradebook.db"),
        "shadow": "/etc/shadow",
    }
    seen = run_inside(
        f"paths = {paths!r}\nprint(json.dumps({{k: os.path.exists(v) for k, v in paths.items()}}))",
        tmp_path,
    )
    assert seen == {
        "solutions": False,
        "tests": False,
        "grader": True,
        "former": True,
        "course": False,
        "gradebook": False,
        "shadow": False,
    }


def test_no_network_not_even_the_hosts_loopback(tmp_path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        result = run_inside(
            "ok = []\n"
            f"for host, port in (('127.0.0.1', {port}), ('1.1.1.1', 53)):\n"
            "    try:\n"
            "        socket.create_connection((host, port), timeout=2).close(); ok.append(host)\n"
            "    except OSError:\n"
            "        pass\n"
            "print(json.dumps(ok))",
            tmp_path,
        )
    finally:
        server.close()
    assert result == []


def test_environment_has_none_of_the_graders_variables(tmp_path) -> None:
    seen = run_inside(
        "env = dict(os.environ)\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n"
        "        if b's3cr3t' in open(f'/proc/{pid}/environ', 'rb').read(): env['leak'] = pid\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps(env))",
        tmp_path,
    )
    assert "GRADER_SECRET" not in seen and "leak" not in seen
    assert set(seen) <= set(sandbox._SANDBOX_ENV) | {"PWD"}


def test_only_its_own_folder_is_writable_and_tmp_is_private(tmp_path) -> None:
    targets = [
        str(REPO / "grader" / "evil.py"),
        "/usr/evil",
        sys.prefix + "/evil",
        "/evil",
        "/home/learner/mine.txt",
        "/tmp/private.txt",
    ]
    written = run_inside(
        f"done = []\nfor path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x'); done.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps(done))",
        tmp_path,
    )
    assert written == ["/home/learner/mine.txt", "/tmp/private.txt"]
    assert not (REPO / "grader" / "evil.py").exists()
    assert not Path("/tmp/private.txt").exists()


def test_own_pid_namespace_and_no_privileges(tmp_path) -> None:
    seen = run_inside(
        "status = open('/proc/self/status').read()\n"
        "caps = [l.split()[1] for l in status.splitlines() if l.startswith('CapEff')][0]\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "print(json.dumps({'uid': os.getuid(), 'caps': caps, 'pids': len(pids)}))",
        tmp_path,
    )
    assert seen["caps"] == "0000000000000000"
    assert seen["pids"] <= 3  # bwrap's init, this process, at most one more
    if os.geteuid() == 0:
        assert seen["uid"] == sandbox.sandbox_uid(SLOT)


def test_a_process_flood_stops_at_the_limit(tmp_path) -> None:
    seen = run_inside(
        "children = []\n"
        "try:\n"
        "    for _ in range(500):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        children.append(pid)\n"
        "except OSError:\n"
        "    pass\n"
        "for pid in children:\n"
        "    os.kill(pid, 9)\n"
        "print(json.dumps(len(children)))",
        tmp_path,
        processes=20,
    )
    assert 10 <= seen < 20


def test_kill_stops_the_whole_tree(tmp_path) -> None:
    scratch = tmp_path / "scratch"
    sandbox.prepare_scratch(scratch, SLOT, sandboxed=True)
    code = _prelude() + "os.setsid() if os.fork() == 0 else None\nos.fork()\ntime.sleep(300)"
    process = subprocess.Popen(
        sandbox.bwrap_command([sys.executable, "-I", "-c", code], scratch, SLOT),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while len(sandbox.process_tree(process.pid)[0]) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    tree, _ = sandbox.process_tree(process.pid)
    assert len(tree) >= 5
    sandbox.kill(process)
    time.sleep(0.5)
    assert [pid for pid in tree if _running(pid)] == []


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for the machine's init to collect it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_without_bwrap_it_warns_loudly_and_still_grades(tmp_path, monkeypatch, capsys) -> None:
    """Elsewhere than Linux with bwrap: resource limits only, after a loud warning."""
    import nbformat

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from submissions import corpus

    from grader.judge.grade import grade_submission, make_plan

    plan = make_plan()
    plan.groups = {g: replace(group, cases=group.cases[:1]) for g, group in plan.groups.items()}

    monkeypatch.setattr(sandbox, "bwrap_executable", lambda: None)
    monkeypatch.setattr(sandbox, "_warned", False)
    notebook = tmp_path / "lab.ipynb"
    nbformat.write(corpus.notebook(corpus.read_cells("correct_einsum")), notebook)
    with pytest.warns(RuntimeWarning, match="without a sandbox"):
        result = grade_submission(
            notebook,
            "ada",
            "lab",
            plan,
            limits=sandbox.Limits(wall_seconds=30),
            work_dir=tmp_path / "w",
        )
    assert "WITHOUT a sandbox" in capsys.readouterr().err
    assert (result.status, result.score()) == ("ok", 100), result.messages
