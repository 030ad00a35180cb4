"""What graded functions may not use, and how the grader notices.

Learners implement attention themselves, so the built-ins that compute it in one call are
off limits inside graded functions. Two independent ways of noticing:

- :func:`scan_source` reads a graded cell's syntax tree (trusted, nothing is executed):
  names and attributes such as ``F.scaled_dot_product_attention``, ``torch._C._nn`` routes,
  ``getattr(F, "scaled_dot_product_attention")``, imports of ``solutions``, and attempts to
  switch off the grader's runtime tripwires;
- :class:`Tripwires` (used inside the sandbox by ``grader.probe``) records calls that reach
  those built-ins at run time, however they were looked up.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

# Names whose use computes attention in one call.
FORBIDDEN_NAMES = {
    "scaled_dot_product_attention": "F.scaled_dot_product_attention",
    "_scaled_dot_product_attention_math": "F.scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention_for_cpu": "F.scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention": "F.scaled_dot_product_attention",
    "_scaled_dot_product_efficient_attention": "F.scaled_dot_product_attention",
    "MultiheadAttention": "nn.MultiheadAttention",
    "multi_head_attention_forward": "F.multi_head_attention_forward",
    "_native_multi_head_attention": "nn.MultiheadAttention",
}
# Names that only matter to code trying to switch off the runtime tripwires.
TAMPERING_NAMES = {
    "DisableTorchFunction",
    "DisableTorchFunctionSubclass",
    "_DisableTorchDispatch",
    "_disable_current_modes",
    "_pop_mode",
    "_pop_torch_function_stack",
    "_pop_torch_dispatch_stack",
    "_python_dispatch",
    "_len_torch_function_stack",
}
FORBIDDEN_MODULES = {"solutions"}


@dataclass(frozen=True)
class Finding:
    """One forbidden use: what it is (``F.scaled_dot_product_attention``) and where."""

    name: str
    line: int

    def describe(self) -> str:
        return f"{self.name} (line {self.line})"


def scan_source(source: str) -> list[Finding]:
    """Forbidden uses in one cell's Python source; a cell that does not parse has none."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    findings = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        for name in _names_used(node):
            if name in FORBIDDEN_NAMES:
                findings.append(Finding(FORBIDDEN_NAMES[name], line))
            elif name in TAMPERING_NAMES:
                findings.append(Finding(f"{name} (switching off the grader's checks)", line))
        for module in _modules_imported(node):
            if module.split(".")[0] in FORBIDDEN_MODULES:
                findings.append(Finding(f"import {module}", line))
    return sorted(set(findings), key=lambda finding: (finding.line, finding.name))


def _names_used(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.alias):
        return [node.name.split(".")[-1], *(node.asname and [node.asname] or [])]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        # getattr(F, "scaled_dot_product_attention"), torch.ops.aten.__getattr__("..."), etc.
        text = node.value.strip()
        if not text or any(ch.isspace() for ch in text):
            return []  # prose, such as a docstring that names what not to use
        return [text.split(".")[-1], text.split("::")[-1].split(".")[0]]
    return []


def _modules_imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        called = node.func
        name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
        if name in {"import_module", "__import__"} and isinstance(node.args[0].value, str):
            return [node.args[0].value]
    return []


# -- runtime tripwires (inside the sandbox) ---------------------------------------------------

# Substrings of the torch functions and ATen operators that betray a one-call attention.
_FUNCTION_MARKS = {
    "scaled_dot_product_attention": "F.scaled_dot_product_attention",
    "multi_head_attention_forward": "F.multi_head_attention_forward",
    "_native_multi_head_attention": "nn.MultiheadAttention",
}


class Tripwires:
    """Records forbidden calls while armed (``with tripwires.armed(): fn(...)``).

    Watches torch's function-override hook, which every Python route to a torch function
    passes (``F.``, ``getattr``, ``torch._C._nn``, ``torch.ops.aten`` included), and the
    ``nn.MultiheadAttention`` class itself. Calls go through unchanged; this only records.
    """

    def __init__(self) -> None:
        import torch
        from torch.overrides import TorchFunctionMode

        self.seen: list[str] = []
        self._armed = False
        seen = self.seen
        wires = self

        class _FunctionWatch(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                name = getattr(func, "__name__", "") or str(func)
                for mark, what in _FUNCTION_MARKS.items():
                    if mark in name:
                        seen.append(what)
                return func(*args, **(kwargs or {}))

        self._modes = (_FunctionWatch,)
        original_init = torch.nn.MultiheadAttention.__init__

        def watched_init(module, *args, **kwargs):
            if wires._armed:
                seen.append("nn.MultiheadAttention")
            original_init(module, *args, **kwargs)

        torch.nn.MultiheadAttention.__init__ = watched_init
        original_forward = torch.nn.MultiheadAttention.forward

        def watched_forward(module, *args, **kwargs):
            if wires._armed:
                seen.append("nn.MultiheadAttention")
            return original_forward(module, *args, **kwargs)

        torch.nn.MultiheadAttention.forward = watched_forward

    def armed(self) -> _Armed:
        return _Armed(self)

    def take(self) -> list[str]:
        """Forbidden uses recorded since the last call, once each, in order."""
        found = list(dict.fromkeys(self.seen))
        self.seen.clear()
        return found


class _Armed:
    def __init__(self, wires: Tripwires) -> None:
        self.wires = wires
        self.modes = [mode() for mode in wires._modes]

    def __enter__(self) -> None:
        self.wires._armed = True
        for mode in self.modes:
            mode.__enter__()

    def __exit__(self, *exc: object) -> None:
        for mode in reversed(self.modes):
            try:
                mode.__exit__(*exc)
            except Exception:  # noqa: BLE001 - a learner popped our mode; evidence stays recorded
                pass
        self.wires._armed = False
