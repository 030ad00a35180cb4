"""Known wrong uses of the pool in ``parallel_multihead_attention``, and the diagnosis of a
pool log (``InstrumentedPool.calls`` or ``log()``): one map call, one (q, k, v, mask) item per
head, a function worker processes can import. Titles and hints are shown to learners.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grader.learner.counting_pool import PoolCall
from grader.learner.diagnose import Diagnosis, named_mistake


@dataclass(frozen=True)
class PoolMistake:
    """A known wrong use of the pool in ``parallel_multihead_attention``, read from a pool log."""

    key: str
    title: str
    hint: str


POOL_MISTAKES: list[PoolMistake] = [
    PoolMistake(
        "pool_not_used",
        "the pool is not used: the heads run one after another in this process",
        "Build data_to_map (one (q, k, v, mask) tuple per head) and call "
        "pool.map(attention_function, data_to_map) on the pool you were given.",
    ),
    PoolMistake(
        "one_item_for_all_heads",
        "pool.map gets a single item holding all heads, so only one worker does anything",
        "Make one item per head: slice features [i*s:(i+1)*s] of queries, keys and values "
        "for head i, so data_to_map has `heads` items.",
    ),
    PoolMistake(
        "several_map_calls",
        "pool.map is called several times (e.g. once per head), so the heads run one by one",
        "Call pool.map once, with a list holding every head's item; each call waits for its "
        "results before the next one starts.",
    ),
    PoolMistake(
        "wrong_number_of_items",
        "pool.map gets a number of items different from the number of heads",
        "data_to_map should have exactly one (q, k, v, mask) item per head.",
    ),
    PoolMistake(
        "items_not_per_head",
        "the pool items are not (q, k, v, mask) tuples of one head's slices",
        "Each item is a tuple (q, k, v, mask) with q, k, v of shape (b, t, s): head i's "
        "features [i*s:(i+1)*s].",
    ),
    PoolMistake(
        "pool_results_unused",
        "the output is not built from what pool.map returns (the heads are computed some "
        "other way, or something else is mapped over the pool)",
        "The list pool.map(attention_function, data_to_map) returns holds each head's "
        "output, in order: put those results side by side along the features to get the "
        "answer, rather than computing the heads again.",
    ),
    PoolMistake(
        "worker_not_importable",
        "the worker function cannot be imported by the pool's processes",
        "Under spawn and forkserver, workers import the function by name: define "
        "attention_function in a module (the %%writefile my_transformer_model.py cell), "
        "import it from there, and do not use lambdas or functions defined inside others.",
    ),
]

POOL_MISTAKES_BY_KEY: dict[str, PoolMistake] = {m.key: m for m in POOL_MISTAKES}

def _is_per_head_item(item: dict[str, Any], head_shape: Sequence[int] | None) -> bool:
    parts = item.get("parts") or []
    if item.get("type") not in {"tuple", "list"} or len(parts) != 4:
        return False
    *tensors, flag = parts
    return (
        all(p.get("type") == "Tensor" for p in tensors)
        and flag.get("type") in {"bool", "int"}
        and (head_shape is None or all(list(p["shape"]) == list(head_shape) for p in tensors))
    )


def _pool_diagnosis(key: str, detail: str = "") -> Diagnosis:
    return named_mistake(POOL_MISTAKES_BY_KEY[key], detail)


def diagnose_pool_usage(
    calls: Sequence[PoolCall | dict[str, Any]],
    heads: int,
    *,
    head_shape: Sequence[int] | None = None,
    require_importable: bool = True,
) -> Diagnosis:
    """Diagnose how ``parallel_multihead_attention`` used its pool, from
    ``InstrumentedPool.calls`` or ``log()``; head_shape: each item's (b, t, s), if checked;
    require_importable: the mapped function must be importable by spawned workers."""
    records = [c if isinstance(c, PoolCall) else PoolCall.from_dict(c) for c in calls]
    if not records:
        return _pool_diagnosis("pool_not_used", "pool.map was never called")
    if len(records) > 1:
        sizes = ", ".join(str(r.n_items) for r in records)
        return _pool_diagnosis("several_map_calls", f"{len(records)} calls with {sizes} items")
    call = records[0]
    if require_importable and not call.importable:
        return _pool_diagnosis("worker_not_importable", call.why_not_importable)
    if call.n_items == 1 and heads > 1:
        return _pool_diagnosis("one_item_for_all_heads", f"1 item for {heads} heads")
    if call.n_items != heads:
        return _pool_diagnosis("wrong_number_of_items", f"{call.n_items} items for {heads} heads")
    bad = [i for i, item in enumerate(call.items) if not _is_per_head_item(item, head_shape)]
    if bad:
        detail = f"item {bad[0]} is {_describe(call.items[bad[0]])}"
        if head_shape:
            detail += f"; expected (q, k, v, mask) with q, k, v of shape {tuple(head_shape)}"
        return _pool_diagnosis("items_not_per_head", detail)
    note = "" if call.importable else f" (note: {call.why_not_importable})"
    return Diagnosis(
        True, None, f"One pool.{call.method} call with one item per head ({heads}).{note}"
    )


def _describe(item: dict[str, Any]) -> str:
    kind = item.get("type", "?")
    if kind == "Tensor":
        return f"Tensor{tuple(item.get('shape', ()))}"
    if "parts" in item:
        return f"{kind}({', '.join(_describe(p) for p in item['parts'])})"
    if "value" in item:
        return repr(item["value"])
    return kind
