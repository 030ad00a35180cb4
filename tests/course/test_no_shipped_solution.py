"""What learners get holds no working attention they could hand in as their own.

The student bundle ships ``former/``, the public ``grader`` modules and
``model.py``. Attention in them goes through PyTorch's fused
``scaled_dot_product_attention``, which graded functions may not call; a
softmax (or an exp) written anywhere else in shipped code could be copied as an
answer, so each one must be listed below with the reason it is harmless.
Budget: about 5 s (one bundle build into a temporary folder).
"""

from __future__ import annotations

import ast

import pytest

from grader.course import bundle

# Calls and names that normalise scores into weights, or exponentiate them.
SOFTMAX_LIKE = frozenset(
    {
        "softmax",
        "log_softmax",
        "softmin",
        "gumbel_softmax",
        "Softmax",
        "LogSoftmax",
        "Softmin",
        "exp",
        "exp_",
        "exp2",
        "expm1",
        "logsumexp",
    }
)

# (shipped file, enclosing function, name) -> why a learner gains nothing from it.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("former/transformers.py", "CTransformer.forward", "log_softmax"): (
        "the classifier's log-probabilities over classes, after attention"
    ),
    ("former/transformers.py", "GTransformer.forward", "log_softmax"): (
        "the generator's log-probabilities over the vocabulary, after attention"
    ),
    ("former/generator.py", "sample", "softmax"): (
        "sampling the next character from the model's logits over the vocabulary"
    ),
    ("former/classifier.py", "class_probabilities", "exp"): (
        "class probabilities from the classifier's log-probabilities"
    ),
}


def softmax_like_uses(source: str) -> list[tuple[str, str, int]]:
    """(enclosing function qualname or '<module>', name, line) for every softmax-like use."""
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            name = None
            if isinstance(child, ast.Attribute):
                name = child.attr
            elif isinstance(child, ast.Name):
                name = child.id
            elif isinstance(child, ast.alias):
                name = child.name.rpartition(".")[2]
            if name in SOFTMAX_LIKE:
                found.append((".".join(scope) or "<module>", name, getattr(child, "lineno", 0)))
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = [*scope, child.name]
            visit(child, inner)

    visit(ast.parse(source), [])
    return found


@pytest.fixture(scope="module")
def shipped_python(tmp_path_factory) -> dict[str, str]:
    folder, _ = bundle.build_student_bundle(tmp_path_factory.mktemp("bundle"))
    return {
        path.relative_to(folder).as_posix(): path.read_text()
        for path in sorted(folder.rglob("*.py"))
    }


def test_the_scan_covers_former_grader_and_model(shipped_python):
    assert {"former/attention.py", "grader/learner/mistakes.py", "model.py"} <= set(shipped_python)


def test_shipped_code_computes_no_softmax_outside_the_allow_list(shipped_python):
    unexpected = [
        f"{path}:{line} {name} in {scope}"
        for path, source in shipped_python.items()
        for scope, name, line in softmax_like_uses(source)
        if (path, scope, name) not in ALLOWED
    ]
    assert unexpected == [], (
        "Shipped code computes a softmax or exp a learner could copy as an answer; build it "
        "from scaled_dot_product_attention instead, or add it to ALLOWED with the reason:\n  "
        + "\n  ".join(unexpected)
    )


def test_shipped_code_offers_no_builtin_attention_but_sdpa(shipped_python):
    from former.attention import BUILTIN_ATTENTION

    assert set(BUILTIN_ATTENTION) == {"sdpa"}
    assert "naive_attention" not in shipped_python["former/attention.py"]


@pytest.mark.parametrize(
    "source",
    [
        "def f(q, k, v):\n    return torch.softmax(q @ k.T, dim=-1) @ v",
        "def f(q, k, v):\n    return (q @ k.T).softmax(-1) @ v",
        "from torch.nn.functional import softmax as sm\n",
        "class A:\n    def f(self, s):\n        e = s.exp()\n        return e / e.sum(-1)",
        "layer = nn.Softmax(dim=-1)",
        "def f(s):\n    return torch.exp(s - s.logsumexp(-1, keepdim=True))",
    ],
)
def test_the_scan_finds_written_out_attention(source):
    assert softmax_like_uses(source)


def test_the_scan_names_where_it_found_it():
    source = "class A:\n    def forward(self, x):\n        return F.log_softmax(x, dim=1)\n"
    assert softmax_like_uses(source) == [("A.forward", "log_softmax", 3)]
