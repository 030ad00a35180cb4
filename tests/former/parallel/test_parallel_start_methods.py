"""The pool works under fork, spawn and forkserver, from a script and from a notebook
kernel, even after torch already ran a matrix product (and started its threads) in
the parent; a notebook-defined function gets a clear error instead of a hang."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

METHODS = ("fork", "spawn", "forkserver")

SCRIPT = textwrap.dedent(
    """
    import sys

    import torch

    from former.attention import sdpa_attention
    from former.parallel import PoolAttention, make_pool


    def head(args):  # lives in the script's __main__
        q, k, v, mask = args
        return sdpa_attention(q, k, v, 1, mask)


    def check(method):
        q, k, v = (torch.randn(2, 48, 32) for _ in range(3))
        # spawn imports torch afresh in every worker: one worker keeps the test quick
        with make_pool(1 if method == "spawn" else 2, method) as pool:
            for mask in (False, True):
                out = PoolAttention(pool, head_function=head)(q, k, v, 4, mask)
                error = (out - sdpa_attention(q, k, v, 4, mask)).abs().max().item()
                assert error <= 1e-6, error
        print("ok", method, flush=True)


    if __name__ == "__main__":
        x = torch.randn(400, 400)
        (x @ x).sum()  # torch's intra-op thread pool is now running
        for method in sys.argv[1:]:
            check(method)
    """
)


@pytest.mark.timeout(180)
def test_every_start_method_from_a_script(tmp_path, repo_root):
    script = tmp_path / "heads_script.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), *METHODS],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == [f"ok {method}" for method in METHODS]


HEADS_MODULE = """%%writefile nb_heads.py
from former.attention import sdpa_attention


def attention_function(args):
    q, k, v, mask = args
    return sdpa_attention(q, k, v, 1, mask)
"""

NOTEBOOK_CELLS = [
    HEADS_MODULE,
    textwrap.dedent(
        """
        import torch
        from former.attention import sdpa_attention
        from former.parallel import PoolAttention, UnpicklableFunctionError, make_pool
        import nb_heads

        x = torch.randn(400, 400)
        y = x @ x  # torch has run in the kernel before any pool exists
        q, k, v = (torch.randn(2, 48, 32) for _ in range(3))
        """
    ),
    textwrap.dedent(
        f"""
        pools = {{}}
        for method in {METHODS!r}:
            pools[method] = pool = make_pool(1 if method == "spawn" else 2, method)
            for mask in (False, True):
                out = PoolAttention(pool, nb_heads.attention_function)(q, k, v, 4, mask)
                assert (out - sdpa_attention(q, k, v, 4, mask)).abs().max() <= 1e-6
            print("ok", method)
        """
    ),
    textwrap.dedent(
        """
        def notebook_head(args):
            q, k, v, mask = args
            return sdpa_attention(q, k, v, 1, mask)

        try:
            pools["spawn"].map(notebook_head, [(q, k, v, False)])
        except UnpicklableFunctionError as error:
            print("clear error:", error)
        """
    ),
    textwrap.dedent(
        """
        with make_pool(2, "fork") as pool:  # a fork copies the notebook, function included
            out = PoolAttention(pool, notebook_head)(q, k, v, 4, True)
            assert (out - sdpa_attention(q, k, v, 4, True)).abs().max() <= 1e-6
        print("fork runs notebook functions")
        for pool in pools.values():
            pool.close()
        """
    ),
]


def cell_text(cell) -> str:
    return "".join(
        output.get("text", "") for output in cell.outputs if output.get("output_type") == "stream"
    )


@pytest.mark.timeout(240)
def test_every_start_method_from_a_notebook_kernel(tmp_path, repo_root, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PYTHONPATH", str(repo_root))
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in NOTEBOOK_CELLS]
    client = nbclient.NotebookClient(
        notebook,
        timeout=150,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    assert (tmp_path / "nb_heads.py").exists()
    assert cell_text(notebook.cells[2]).split("\n")[:3] == [f"ok {m}" for m in METHODS]
    message = cell_text(notebook.cells[3])
    assert message.startswith("clear error:"), message
    assert "notebook_head" in message and "%%writefile" in message and "'spawn'" in message
    assert "fork runs notebook functions" in cell_text(notebook.cells[4])
