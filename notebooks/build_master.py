"""Write the master notebook of the course from this script.

    python notebooks/build_master.py            # refuses to replace a hand-edited master
    python notebooks/build_master.py --force    # replace it anyway
    python notebooks/build_master.py --check    # exit 1 when the master differs from this script

The committed ``.ipynb`` is the product, and instructors may edit it directly
(JupyterLab's nbgrader toolbar); this script is how it was first written, with
the solution cells taken verbatim from ``solutions/attention.py``. It never
replaces a master that was edited by hand unless told to (``--force``).
A test keeps the master's solution cells identical to ``solutions/attention.py``
either way.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import sys
from pathlib import Path
from types import ModuleType

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

COURSE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = COURSE_ROOT.parent
ASSIGNMENT = "transformers_from_scratch"
MASTER = COURSE_ROOT / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"

SOLUTION_IDS = ("multihead_attention", "attention_function", "parallel_multihead_attention")
MODULE_HEADER = "import math\n\nimport torch\n"


# --------------------------------------------------------------------------- cell helpers


class Cells:
    """Collects notebook cells with stable ids, so regenerating gives the same file."""

    def __init__(self) -> None:
        self.cells: list = []

    def _id(self, hint: str) -> str:
        return f"{len(self.cells):03d}-{hint}"[:64]

    def md(self, text: str, hint: str = "md") -> None:
        cell = new_markdown_cell(text.strip("\n"))
        cell.id = self._id(hint)
        self.cells.append(cell)

    def code(self, text: str, hint: str = "code") -> None:
        cell = new_code_cell(text.strip("\n"))
        cell.id = self._id(hint)
        self.cells.append(cell)

    def solution(self, grade_id: str, text: str) -> None:
        cell = new_code_cell(text.strip("\n"))
        cell.id = self._id(grade_id)
        cell.metadata["nbgrader"] = {
            "grade": False,
            "grade_id": grade_id,
            "locked": False,
            "schema_version": 3,
            "solution": True,
            "task": False,
        }
        self.cells.append(cell)

    def test(self, grade_id: str, visible: str) -> None:
        hidden = (
            "### BEGIN HIDDEN TESTS\n"
            f'from solutions.hidden_tests import run_group; run_group("{grade_id}", globals())\n'
            "### END HIDDEN TESTS"
        )
        cell = new_code_cell(visible.strip("\n") + "\n" + hidden)
        cell.id = self._id(grade_id)
        cell.metadata["nbgrader"] = {
            "grade": True,
            "grade_id": grade_id,
            "locked": True,
            "points": points_of(grade_id),
            "schema_version": 3,
            "solution": False,
            "task": False,
        }
        self.cells.append(cell)


def solutions_module(name: str) -> ModuleType:
    """``solutions.<name>`` from this checkout, whatever folder the script runs from."""
    sys.path.insert(0, str(REPO_ROOT))
    try:
        return importlib.import_module(f"solutions.{name}")
    finally:
        sys.path.pop(0)


def reference_source(name: str) -> str:
    """The source of a reference function in solutions/attention.py."""
    return inspect.getsource(getattr(solutions_module("attention"), name))


def points_of(grade_id: str) -> int:
    """Points of a test cell, as its group in solutions/hidden_tests.py sets them."""
    return solutions_module("hidden_tests").GROUPS[grade_id].points


def with_solution_markers(function_source: str) -> str:
    """Wrap a function's body (after its docstring) in BEGIN/END SOLUTION markers.

    Learners then see the signature and the docstring, and a stub in place of the body.
    """
    lines = function_source.rstrip("\n").split("\n")
    function = ast.parse(function_source).body[0]
    first = function.body[0]
    has_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    split_at = first.end_lineno if has_docstring else function.body[0].lineno - 1
    indent = " " * function.body[-1].col_offset
    return "\n".join(
        [
            *lines[:split_at],
            f"{indent}### BEGIN SOLUTION",
            *lines[split_at:],
            f"{indent}### END SOLUTION",
        ]
    )


def strip_solution_markers(source: str) -> str:
    """The solution cell's code without the marker lines (what solutions/attention.py holds)."""
    return "\n".join(
        line
        for line in source.split("\n")
        if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")
    )


def solution_cell_sources() -> dict[str, str]:
    """grade_id -> source of the master's solution cell, built from solutions/attention.py."""
    return {
        "multihead_attention": MODULE_HEADER
        + "\n\n"
        + with_solution_markers(reference_source("multihead_attention")),
        "attention_function": "%%writefile my_transformer_model.py\n"
        + '"""Attention for one head, in a module so that worker processes can import it."""\n\n'
        + MODULE_HEADER
        + "\n\n"
        + with_solution_markers(reference_source("attention_function")),
        "parallel_multihead_attention": "import torch\n\n"
        "from my_transformer_model import attention_function\n\n\n"
        + with_solution_markers(reference_source("parallel_multihead_attention")),
    }


# --------------------------------------------------------------------------- the notebook


def build() -> nbformat.NotebookNode:
    c = Cells()
    solutions = solution_cell_sources()

    c.md(
        """
# Transformers from scratch

In this lab you implement **multi-head self-attention** yourself, plug it into
`former` (a small, readable Transformer package after Peter Bloem's), train a
sentiment classifier on IMDB movie reviews, and then spread the attention heads
over your CPU cores with `multiprocessing.Pool`.

| task | what you do | time |
| --- | --- | --- |
| 0 | tour of `former`, a first training run with PyTorch's attention | 10 min |
| 1 | write `multihead_attention`, train with it, look at what the heads learned | 30 min |
| 2 | run the heads in parallel processes and measure when that pays off | 30 min |
| 3 | compare your functions with the released solutions | 20 min |

**How this notebook works.** Cells that say `# YOUR CODE HERE` are yours: replace
`raise NotImplementedError()` with your code. Right after each of them, a
*visible check* prints one line per property and, when something is off, which
common mistake it looks like. The cells marked *test* are graded (Task 1: 60
points, Task 2: 40 points); they also run hidden cases when your notebook is
graded, so make your code correct in general, not just on the visible examples.
The **Validate** button in the toolbar runs the whole notebook the way the
grader will.

Run the cells in order, top to bottom.
""",
        "intro",
    )
    c.code(
        """
import inspect
import os
import time

import matplotlib.pyplot as plt
import torch

import former

# Grading (and Validate) runs the whole notebook: it trains briefly and skips the optional
# SageMaker and timing cells. LAB_QUICK=1 shortens the training cells too; they still train.
GRADING = os.environ.get("NBGRADER_EXECUTION") in ("autograde", "validate")
QUICK = GRADING or os.environ.get("LAB_QUICK", "") not in ("", "0")
torch.manual_seed(0)
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, quick mode: {QUICK}")
""",
        "setup",
    )

    # ----------------------------------------------------------------- Task 0
    c.md(
        """
## Task 0 · A tour of `former` (10 min)

`former` is organised the way you would explain a Transformer on a whiteboard:

- `former/attention.py`: the *plug* where an attention function goes in;
- `former/modules.py`: `SelfAttention` and `TransformerBlock`;
- `former/transformers.py`: whole models, `CTransformer` (classification) and
  `GTransformer` (generation);
- `former/data/` and `former/training.py`: IMDB loading, batching, the training loop.

Let us read the real source. First the classifier's constructor and its
hyperparameters:
""",
        "task0",
    )
    c.code("print(inspect.getsource(former.CTransformer.__init__))", "src-ctransformer")
    c.md(
        """
- `emb`: size of each token's vector; `heads`: attention heads per layer;
  `depth`: number of transformer blocks;
- `seq_length`: the longest input the position embeddings cover;
  `num_tokens`: vocabulary size; `num_classes`: 2 for positive/negative;
- `max_pool`: pool the token vectors by max (or mean) before classifying;
- `attention`: **the function that computes attention**, which you write in Task 1.

A block is attention followed by a small feed-forward network, each with a
residual connection and layer normalisation:
""",
        "hyperparameters",
    )
    c.code("print(inspect.getsource(former.TransformerBlock))", "src-block")
    c.md(
        """
Inside `SelfAttention.forward`, the input is projected to queries, keys and
values, and then handed to the plugged attention function. That call is the
hole you fill in Task 1:
""",
        "hole",
    )
    c.code("print(inspect.getsource(former.SelfAttention.forward))", "src-forward")
    c.md(
        """
### Smoke run

Without an attention function the framework refuses to build a model, and
says what to do:
""",
        "smoke",
    )
    c.code(
        """
try:
    former.CTransformer(emb=32, heads=4, depth=1, seq_length=64, num_tokens=100, num_classes=2)
except NotImplementedError as error:
    print(f"{type(error).__name__}: {error}")
""",
        "no-attention",
    )
    c.md(
        """
To check that the pipes work, train for about a minute with PyTorch's own fused
attention (`attention="sdpa"`). `load_imdb` finds the IMDB reviews
(`$LAB_IMDB`, `$FORMER_DATA_DIR`, your cache, or a download); offline it says so
and uses a small generated corpus instead.
""",
        "data",
    )
    c.code(
        """
from former.data import ClassificationData, TextSplit, load_imdb

data = load_imdb(os.environ.get("LAB_IMDB") or None, vocab_size=20_000 if QUICK else 50_000)
print(data.source)
print(f"{len(data.train.sequences):,} training and {len(data.val.sequences):,} validation reviews, "
      f"a vocabulary of {len(data.vocab):,} words")


def sample(split: TextSplit, n: int, seed: int = 0) -> TextSplit:
    \"\"\"n examples of a split drawn at random (a split may come ordered by label).\"\"\"
    chosen = torch.randperm(len(split.labels), generator=torch.Generator().manual_seed(seed))[:n]
    return TextSplit([split.sequences[i] for i in chosen.tolist()], split.labels[chosen])


def smaller(data: ClassificationData, n_train: int, n_val: int) -> ClassificationData:
    \"\"\"A random part of the data, for training runs that fit in a few minutes.\"\"\"
    return ClassificationData(sample(data.train, n_train), sample(data.val, n_val), data.vocab,
                              data.num_classes, data.source)
""",
        "load-data",
    )
    c.code(
        """
from former.training import ClassifierConfig, build_classifier, fit_classifier, pick_device

device = pick_device()
smoke_config = ClassifierConfig(
    emb=32 if QUICK else 64, heads=4, depth=1, max_length=64 if QUICK else 256,
    vocab_size=len(data.vocab), batch_size=32, epochs=1, evals_per_epoch=2 if QUICK else 4,
    attention="sdpa",
)
smoke_data = smaller(data, 256 if QUICK else 4_000, 128 if QUICK else 1_000)
smoke_model = build_classifier(smoke_config, len(data.vocab), data.num_classes)
start = time.perf_counter()
smoke_metrics = fit_classifier(smoke_model, smoke_data, smoke_config, device=device)
print(f"{time.perf_counter() - start:.0f} s on {device}: {smoke_metrics}")
""",
        "smoke-train",
    )
    c.md(
        """
On 4,000 real reviews, one pass takes a minute or two on a laptop CPU and
reaches roughly 75-85% validation accuracy (in quick mode, on a few hundred
reviews, barely more than a coin flip). Now write the attention yourself.
""",
        "smoke-done",
    )

    # ----------------------------------------------------------------- Task 1
    c.md(
        """
## Task 1 · Multi-head self-attention (30 min)

`SelfAttention` has already projected the input `x` of shape `(b, t, e)` into
`queries`, `keys` and `values`, each of shape `(b, t, heads * s)`: `b` reviews
in the batch, `t` tokens each, `heads` heads of `s` features. Features
`[i*s:(i+1)*s]` belong to head `i`. For every head, separately:

1. scores `w = q @ kᵀ / √s`, shape `(t, t)`: how much each query position
   attends to each key position;
2. with `mask=True` (causal), position `i` may only attend to positions `j <= i`:
   set the scores above the diagonal to `-inf` before the softmax;
3. weights `softmax(w)` along the **key** axis, so each row sums to 1;
4. output `weights @ v`, shape `(t, s)`.

Then put the heads back side by side: the result has shape `(b, t, heads * s)`
with head `i` in features `[i*s:(i+1)*s]`, ready for `unifyheads`.

The walk-through of shapes with `view`, `transpose` and `reshape`:

```
(b, t, heads*s) --view--> (b, t, heads, s) --transpose(1, 2)--> (b, heads, t, s)
                --reshape--> (b*heads, t, s)          # one batch entry per head
scores: bmm((b*heads, t, s), (b*heads, s, t)) -> (b*heads, t, t)
out:    bmm((b*heads, t, t), (b*heads, t, s)) -> (b*heads, t, s)
        --view--> (b, heads, t, s) --transpose(1, 2)--> (b, t, heads, s) --reshape--> (b, t, heads*s)
```

Tips:
- `torch.bmm` multiplies batches of matrices; `@` and `torch.einsum` work too.
- After `transpose`, use `reshape` (or `.contiguous().view`), not `view`.
- Scale by `1/√s` with `s` the size **per head**, not `heads * s`.
- `torch.triu(torch.ones(t, t, dtype=torch.bool), 1)` marks the future; `masked_fill` hides it.
- Keep any helper functions *inside* `multihead_attention`: the function is copied
  into a module file below.
- Not allowed here: `F.scaled_dot_product_attention`, `nn.MultiheadAttention`,
  `F.multi_head_attention_forward`. Loops, `einsum`, `float64`: all fine.
""",
        "task1",
    )
    c.solution("multihead_attention", solutions["multihead_attention"])
    c.md(
        """
### Visible checks

Run this cell after every change. It prints one line per property; for a
wrong answer it says which common mistake the output looks like.
""",
        "checks1",
    )
    c.code(
        """
from grader.checks import check_multihead_attention

report = check_multihead_attention(multihead_attention)
""",
        "check-mha",
    )
    c.md(
        """
### Tests (60 points)

Each test cell shows a small example and runs more cases, hidden from you,
when the notebook is graded: other shapes, `float32` and `float64`, very large
scores, one head, one token, gradients, with and without the mask.
""",
        "tests1",
    )
    c.test(
        "test_task1_values",
        """
# Test 1 (20 points): values, without the mask.
q, k, v = torch.randn(3, 2, 5, 12, generator=torch.Generator().manual_seed(1))
out = multihead_attention(q, k, v, heads=3)
assert isinstance(out, torch.Tensor), f"expected a tensor, got {type(out).__name__}"
assert out.shape == (2, 5, 12), f"expected shape (2, 5, 12) = (b, t, heads*s), got {tuple(out.shape)}"
print("shape (2, 5, 12): ok")
""",
    )
    c.test(
        "test_task1_mask",
        """
# Test 2 (15 points): the causal mask. With mask=True, output 0 depends on position 0 only.
q, k, v = torch.randn(3, 1, 4, 8, generator=torch.Generator().manual_seed(2))
out = multihead_attention(q, k, v, heads=2, mask=True)
assert torch.allclose(out[0, 0], v[0, 0], atol=1e-5), (
    "with mask=True the first position can only attend to itself, so its output must equal "
    "its own value vector"
)
print("first position attends only to itself: ok")
""",
    )
    c.test(
        "test_task1_robust",
        """
# Test 3 (10 points): robustness. Huge scores must not turn into nan or inf.
q = torch.full((1, 3, 4), 100.0)
out = multihead_attention(q, q, torch.randn(1, 3, 4), heads=1)
assert torch.isfinite(out).all(), "the output has nan or inf for large scores: is your softmax stable?"
print("large scores stay finite: ok")
""",
    )
    c.test(
        "test_task1_gradients",
        """
# Test 4 (15 points): gradients flow back to queries, keys and values.
q, k, v = (torch.randn(2, 3, 8, requires_grad=True) for _ in range(3))
multihead_attention(q, k, v, heads=2).sum().backward()
assert all(x.grad is not None for x in (q, k, v)), "no gradient reached the inputs"
print("gradients reach queries, keys and values: ok")
""",
    )
    c.md(
        """
### Your function in a module

`former` (and a SageMaker training job) find your function by its import path
`"my_transformer_model:multihead_attention"`. This cell copies it, from the
cell above, into `my_transformer_model.py` next to this notebook. Run it again
whenever you change `multihead_attention`.
""",
        "module",
    )
    c.code(
        """
import importlib
from pathlib import Path

MODULE = Path("my_transformer_model.py")
MARKER = "# --- multihead_attention, copied from the notebook ---"


def save_multihead_attention(path: Path = MODULE) -> None:
    \"\"\"Put the notebook's multihead_attention at the end of the module, keeping what precedes it.\"\"\"
    text = path.read_text() if path.exists() else "import math\\n\\nimport torch\\n"
    text = text.split(MARKER)[0].rstrip("\\n")
    path.write_text(f"{text}\\n\\n\\n{MARKER}\\n{inspect.getsource(multihead_attention)}")


save_multihead_attention()
import my_transformer_model  # noqa: E402

importlib.reload(my_transformer_model)
print(f"{MODULE} defines: {[n for n in dir(my_transformer_model) if not n.startswith('_')]}")
""",
        "save-module",
    )
    c.md(
        """
### Train with your attention

The model below is the smoke-run model, one block deeper, with **your**
function as its attention, trained on 6,000 reviews: a few minutes on a
laptop CPU. The plot updates after every evaluation.
""",
        "train1",
    )
    c.code(
        """
from IPython.display import display


class LivePlot:
    \"\"\"Training loss and validation accuracy, redrawn in place after each evaluation.\"\"\"

    def __init__(self) -> None:
        self.history: list[dict] = []
        self.fig, (self.ax_loss, self.ax_acc) = plt.subplots(1, 2, figsize=(9, 3))
        self.handle = display(self.fig, display_id=True)
        plt.close(self.fig)

    def __call__(self, metrics: dict) -> None:
        self.history.append(dict(metrics))
        steps = range(1, len(self.history) + 1)
        for ax, key, label in ((self.ax_loss, "train_loss", "training loss"),
                               (self.ax_acc, "val_acc", "validation accuracy")):
            ax.clear()
            ax.plot(steps, [m.get(key, float("nan")) for m in self.history], marker="o")
            ax.set_xlabel("evaluation")
            ax.set_title(label)
        self.fig.tight_layout()
        self.handle.update(self.fig)


config = ClassifierConfig(
    emb=32 if QUICK else 64, heads=4, depth=1 if QUICK else 2, max_length=64 if QUICK else 256,
    vocab_size=len(data.vocab), batch_size=32, epochs=1, evals_per_epoch=2 if QUICK else 6,
    attention="my_transformer_model:multihead_attention",
)
train_data = smaller(data, 256 if QUICK else 6_000, 128 if QUICK else 1_000)
model = build_classifier(config, len(data.vocab), data.num_classes, attention=multihead_attention)
start = time.perf_counter()
metrics = fit_classifier(model, train_data, config, device=device, on_eval=LivePlot())
print(f"{time.perf_counter() - start:.0f} s: {metrics}")
""",
        "train-mha",
    )
    c.md(
        """
### What did the heads learn?

Attention weights are `softmax(q kᵀ / √s)`, and your function returns
`weights @ values`. So if the values are *one-hot* (value `j` is 1 at feature
`j`, 0 elsewhere), the output **is** the weight matrix. The cell below reads the
weights of the first block back through your own function this way, for one
review, and draws one heat map per head.
""",
        "heatmap",
    )
    c.code(
        """
def attention_weights(attention, queries, keys, heads):
    \"\"\"queries, keys: (1, t, heads*s) -> weights (heads, t, t), read through `attention`.\"\"\"
    _, t, hs = queries.shape
    s = hs // heads
    weights = torch.zeros(heads, t, t)
    for start in range(0, t, s):  # s key positions at a time fit into s value features
        n = min(s, t - start)
        onehot = torch.zeros(1, t, heads, s)
        onehot[0, start + torch.arange(n), :, torch.arange(n)] = 1.0
        out = attention(queries, keys, onehot.view(1, t, hs), heads)
        weights[:, :, start:start + n] = out.view(t, heads, s)[:, :, :n].transpose(0, 1)
    return weights


review = data.val.sequences[0][:24]
words = [data.vocab.itos[i] for i in review.tolist()]
block = model.backbone.tblocks[0].attention
captured = {}
hook = block.register_forward_hook(lambda module, args, out: captured.update(x=args[0]))
model.eval()
with torch.no_grad():
    model(review[None].to(device))
    x = captured["x"]
    queries, keys = block.toqueries(x).float().cpu(), block.tokeys(x).float().cpu()
    weights = attention_weights(multihead_attention, queries, keys, block.heads)
hook.remove()

fig, axes = plt.subplots(1, block.heads, figsize=(4 * block.heads, 4), squeeze=False)
for head, ax in enumerate(axes[0]):
    ax.imshow(weights[head], cmap="viridis")
    ax.set_title(f"head {head}")
    ax.set_xticks(range(len(words)), words, rotation=90, fontsize=7)
    ax.set_yticks(range(len(words)), words, fontsize=7)
fig.tight_layout()
plt.show()
""",
        "heatmap-code",
    )
    c.md(
        """
Rows are queries, columns are keys; each row sums to 1. Heads often specialise:
some look at the token itself, some at sentiment words such as *great* or
*boring*, some spread their attention evenly.

### Train on a GPU with SageMaker (optional)

`former.sagemaker.launch_training_job` packages `model.py`, `former/` and your
`my_transformer_model.py` into a SageMaker training job. Without AWS
credentials (and a role in `$SAGEMAKER_ROLE`) this cell is a dry run: it shows
the job it would submit and sends nothing.
""",
        "sagemaker",
    )
    c.code(
        """
from former.sagemaker import LaunchError, credentials_configured, launch_training_job


def sagemaker_job(submit: bool):
    \"\"\"Build the training job that runs your module; send it only when `submit` is true.\"\"\"
    return launch_training_job(
        data=os.environ.get("LAB_S3_DATA", "s3://your-bucket/imdb/"),
        role=os.environ.get("SAGEMAKER_ROLE", "arn:aws:iam::123456789012:role/YourSageMakerRole"),
        region=os.environ.get("AWS_REGION", "us-east-1"),
        hyperparameters={"epochs": 3, "attention": "my_transformer_model:multihead_attention"},
        learner_module=MODULE,
        dry_run=not submit,
    )


if GRADING:
    print("(the SageMaker cell does not run while the notebook is graded)")
else:
    try:
        job = sagemaker_job(submit="SAGEMAKER_ROLE" in os.environ and credentials_configured())
    except LaunchError as error:
        print(f"Cannot build the job: {error}")
    else:
        request = job.request
        print("submitted:" if job.submitted else "dry run, nothing sent. The job would be:")
        print(f"  name             {job.job_name}")
        print(f"  instances        {request['ResourceConfig']['InstanceCount']} x "
              f"{request['ResourceConfig']['InstanceType']}")
        print(f"  image            {request['AlgorithmSpecification']['TrainingImage']}")
        print(f"  hyperparameters  {request.get('HyperParameters')}")
        if job.submitted:
            print(f"  follow it at {job.console_url}")
""",
        "sagemaker-code",
    )

    # ----------------------------------------------------------------- Task 2
    c.md(
        """
## Task 2 · Heads in parallel processes (30 min)

The heads of multi-head attention are independent: each could run on its own
CPU core. Python threads would not help much (the interpreter lock), so we use
**processes**, through `multiprocessing.Pool`. How many cores do you have?
""",
        "task2",
    )
    c.code(
        """
import multiprocessing

print(f"{multiprocessing.cpu_count()} CPU cores; PyTorch uses {torch.get_num_threads()} threads")
""",
        "cpu-count",
    )
    c.md(
        """
### A pool of workers, one PyTorch thread each

Two things make pools tricky with PyTorch:

- **Fork after torch ran can deadlock.** With the `fork` start method a worker
  is a copy of this kernel, including PyTorch's thread pool in whatever state
  it was; the copy has the pool's locks but not its threads, and can wait on
  them forever. And even when it works, `n` workers times `n` threads each
  oversubscribe the cores. So every worker uses **one** intra-op thread
  (`initializer=torch.set_num_threads, initargs=(1,)`), and we start workers
  with `forkserver` (Linux) or `spawn` (macOS, Windows), which begin from a
  fresh interpreter.
- **Fresh interpreters cannot see this notebook.** `spawn` and `forkserver`
  send the function to the worker *by name*: the worker imports its module and
  looks it up. A function defined in a notebook cell lives in `__main__`, which
  the worker cannot import, so `pool.map` would fail. That is why the
  per-head function goes into a file, `my_transformer_model.py`.
""",
        "pool-why",
    )
    c.code(
        """
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
PROCESSES = min(4, multiprocessing.cpu_count())
pool = multiprocessing.get_context(START_METHOD).Pool(
    PROCESSES, initializer=torch.set_num_threads, initargs=(1,)
)
print(f"a pool of {PROCESSES} {START_METHOD} workers, one torch thread each")
""",
        "make-pool",
    )
    c.md(
        """
### One head: `attention_function`

`attention_function(args)` receives one tuple `(q, k, v, mask)` for **one
head**, with `q`, `k`, `v` of shape `(b, t, s)`, and returns that head's output
`(b, t, s)`: scaled dot-product attention, causal when `mask` is true.

The cell starts with `%%writefile my_transformer_model.py`: running it
*writes* the cell into that file instead of executing it. The file then holds
`attention_function` only, so the cell after it adds your `multihead_attention`
back (SageMaker and `former` import it from the same module) and imports both.
""",
        "attention-function",
    )
    c.solution("attention_function", solutions["attention_function"])
    c.code(
        """
save_multihead_attention()  # the module needs multihead_attention too
importlib.invalidate_caches()
importlib.reload(my_transformer_model)
from my_transformer_model import attention_function  # noqa: E402

from grader.checks import check_attention_function  # noqa: E402

report = check_attention_function(attention_function)
""",
        "check-af",
    )
    c.test(
        "test_task2_attention_function",
        """
# Test 5 (10 points): one head. attention_function must come from my_transformer_model.py.
assert attention_function.__module__ == "my_transformer_model", (
    "import attention_function from my_transformer_model (run the %%writefile cell, then the cell after it)"
)
q, k, v = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(5))
assert attention_function((q, k, v, False)).shape == (2, 4, 5), "expected (b, t, s) = (2, 4, 5)"
print("one head, shape (2, 4, 5): ok")
""",
    )
    c.md(
        """
### All heads over the pool: `parallel_multihead_attention`

Same contract as `multihead_attention`, plus the pool:

1. build `data_to_map`, a list with one `(q, k, v, mask)` tuple per head, where
   head `i`'s `q` is `queries[:, :, i*s:(i+1)*s]` (and likewise `k`, `v`);
2. `results = pool.map(attention_function, data_to_map)`: one item per head;
3. concatenate the results along the feature axis.

Tip: `.contiguous()` on each slice sends a compact copy to the worker instead
of a view into the whole tensor.
""",
        "parallel",
    )
    c.solution("parallel_multihead_attention", solutions["parallel_multihead_attention"])
    c.code(
        """
from grader.checks import check_parallel_multihead_attention

report = check_parallel_multihead_attention(
    parallel_multihead_attention, pool=pool, reference=multihead_attention
)
""",
        "check-parallel",
    )
    c.test(
        "test_task2_parallel_values",
        """
# Test 6 (15 points): the parallel version equals the heads computed one after the other.
q, k, v = torch.randn(3, 2, 6, 16, generator=torch.Generator().manual_seed(6))
for mask in (False, True):
    parallel = parallel_multihead_attention(q, k, v, 4, mask=mask, pool=pool)
    per_head = [tuple(x[:, :, i * 4:(i + 1) * 4] for x in (q, k, v)) for i in range(4)]
    serial = torch.cat([attention_function((*qkv, mask)) for qkv in per_head], dim=2)
    assert parallel.shape == serial.shape, f"shape {tuple(parallel.shape)}, expected {tuple(serial.shape)}"
    assert torch.allclose(parallel, serial, atol=1e-5), (
        f"parallel differs from attention_function applied head by head (mask={mask})"
    )
print("parallel equals serial, with and without the mask: ok")
""",
    )
    c.test(
        "test_task2_pool_usage",
        """
# Test 7 (15 points): the heads really go through the pool, one item per head.
class CountingPool:
    def __init__(self, pool):
        self.pool, self.items = pool, []

    def map(self, fn, items):
        items = list(items)
        self.items.append(len(items))
        return self.pool.map(fn, items)


counting = CountingPool(pool)
parallel_multihead_attention(*torch.randn(3, 1, 4, 12), 3, pool=counting)
assert counting.items == [3], f"expected one pool.map call with 3 items (one per head), saw {counting.items}"
print("one pool.map call, one item per head: ok")
""",
    )
    c.md(
        """
### When do processes pay off?

Each head's tensors travel to a worker and back, and the workers run one
thread each. PyTorch on its own already spreads one big matrix product over
all cores with threads. The experiment below times, for growing sequence
lengths:

- serial: your `parallel_multihead_attention` with the heads run one after the
  other in this process, on one thread (the baseline);
- processes: the same function on pools of 1, 2, ... workers;
- threads: the heads one after the other again, but PyTorch may use all cores
  for each matrix product.

and plots the speed-up of each against serial (8 heads, a batch of 4).
""",
        "timing",
    )
    c.code(
        """
from former.parallel import measure_speedups, plot_speedups

def speedup_experiment():
    results = measure_speedups(
        parallel_multihead_attention,
        lengths=(32, 128) if QUICK else (64, 256, 512, 1024),
        heads=8,
        head_size=16 if QUICK else 64,
        processes=(PROCESSES,) if QUICK else sorted({1, 2, PROCESSES}),
        threads=(multiprocessing.cpu_count(),),
        repeats=1 if QUICK else 3,
    )
    for row in results:
        print(f"t={row['t']:5}  {row['label']:>22}  {row['seconds'] * 1000:8.1f} ms"
              f"  {row['speedup']:5.2f}x")
    return plot_speedups(results)


if GRADING:
    print("(the timing experiment does not run while the notebook is graded)")
else:
    display(speedup_experiment())
""",
        "timing-code",
    )
    c.md(
        """
What to expect on a laptop:

- For short sequences the processes **lose**: copying a head's tensors to a
  worker and back costs more than the few microseconds of arithmetic.
- As `t` grows, the work per head grows like `t²` while the copying grows like
  `t`, so the processes catch up and, with enough cores, win, up to at most
  `processes`× (more precisely: `min(processes, heads, cores)`).
- PyTorch's threads give a similar speed-up without any copying, which is why
  real code relies on them (and on GPUs). Processes pay off when the work
  cannot be threaded: pure Python per item, separate machines, or jobs that
  must not share memory.

When you are done with Task 2, the pool can go:
""",
        "discussion",
    )
    c.code("pool.close()\npool.join()", "close-pool")

    # ----------------------------------------------------------------- Task 3
    c.md(
        """
## Task 3 · Compare with the solutions (20 min)

Your instructor releases the solutions during the lab (in nbgrader's
*Assignments* list as `transformers_from_scratch_solutions`, or as a folder or
file they point you to; set `LAB_SOLUTIONS` to that path if it is somewhere
else). The cell below looks for them; before they are released it says so.
""",
        "task3",
    )
    c.code(
        """
import importlib.util
import sys


def find_released_solutions() -> Path | None:
    \"\"\"The released solutions module, lab_solutions.py, if it is anywhere we know of.\"\"\"
    given = os.environ.get("LAB_SOLUTIONS")
    candidates = [Path(given)] if given else [
        Path("transformers_from_scratch_solutions"),
        Path("..") / "transformers_from_scratch_solutions",
        Path("."),
    ]
    for candidate in candidates:
        path = candidate / "lab_solutions.py" if candidate.is_dir() else candidate
        if path.name == "lab_solutions.py" and path.is_file():
            return path.resolve()
    if given:
        raise FileNotFoundError(f"LAB_SOLUTIONS={given!r} holds no lab_solutions.py")
    return None


released = find_released_solutions()
if released is None:
    print("The solutions are not released yet. Come back to this task when your instructor "
          "releases them, then run this cell again.")
else:
    sys.path.insert(0, str(released.parent))
    lab_solutions = importlib.import_module("lab_solutions")
    print(f"solutions loaded from {released}")
""",
        "load-solutions",
    )
    c.md(
        """
First the outputs: the largest difference between your functions and the
solutions on the same random input (anything below about `1e-5` is rounding).
Then the time each takes.
""",
        "compare",
    )
    c.code(
        """
def best_time(fn, *args, repeats=3, **kwargs) -> float:
    \"\"\"The fastest of a few runs, in milliseconds.\"\"\"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


if released is None:
    print("Nothing to compare yet: the solutions are not released.")
else:
    q, k, v = torch.randn(3, 4, 128 if QUICK else 512, 64)
    heads = 4
    # A fresh pool: its workers can import lab_solutions, which older workers could not.
    with multiprocessing.get_context(START_METHOD).Pool(
        PROCESSES, initializer=torch.set_num_threads, initargs=(1,)
    ) as lab_solutions_pool:
        pairs = {
            "multihead_attention": (multihead_attention, lab_solutions.multihead_attention, {}),
            "parallel_multihead_attention": (
                parallel_multihead_attention,
                lab_solutions.parallel_multihead_attention,
                {"pool": lab_solutions_pool},
            ),
        }
        print(f"{'function':30} {'max |yours - solution|':>24} {'yours ms':>9} {'solution ms':>12}")
        for name, (yours, theirs, extra) in pairs.items():
            for mask in (False, True):
                diff = (yours(q, k, v, heads, mask=mask, **extra)
                        - theirs(q, k, v, heads, mask=mask, **extra)).abs().max().item()
                label = f"{name}{' (mask)' if mask else ''}"
                print(f"{label:30} {diff:24.2e} {best_time(yours, q, k, v, heads, mask=mask, **extra):9.1f}"
                      f" {best_time(theirs, q, k, v, heads, mask=mask, **extra):12.1f}")
""",
        "compare-code",
    )
    c.md(
        """
If your numbers differ by more than rounding, read the solution side by side
with yours: the visible checks above name the usual suspects (scale, softmax
axis, mask, head layout). If yours is slower, look for Python loops over
batch entries or positions, and for copies the solution avoids.

That's the lab. Save the notebook and submit it.
""",
        "end",
    )

    nb = new_notebook(cells=c.cells)
    nb.metadata = {
        "kernelspec": {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        },
        "language_info": {"name": "python"},
    }
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="replace a master that differs")
    parser.add_argument("--check", action="store_true", help="exit 1 if the master is stale")
    parser.add_argument("--out", type=Path, default=MASTER, help="where to write the notebook")
    args = parser.parse_args(argv)

    text = render(build())
    nbformat.validate(json.loads(text))
    current = args.out.read_text() if args.out.exists() else None
    if current == text:
        print(f"{args.out} is up to date")
        return 0
    if args.check:
        print(f"{args.out} differs from notebooks/build_master.py", file=sys.stderr)
        return 1
    if current is not None and not args.force:
        print(
            f"{args.out} differs from what this script writes (edited by hand?). "
            "Re-run with --force to replace it.",
            file=sys.stderr,
        )
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
