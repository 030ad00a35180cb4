"""The lab's cells the grader does not run, and the names only they bind.

The master tags its training runs, speed-up plots, SageMaker and optional cells
``skip-when-graded``; the grader runs every other cell of a submission. A graded function that
uses a name only those cells bind works in the learner's kernel and fails when graded, so the
visible checks warn about it first. A test keeps :data:`SKIPPED_NAMES` equal to the master's.
"""

from __future__ import annotations

import types
from collections.abc import Callable

SKIP_TAG = "skip-when-graded"

# Bound by the master's skipped cells and by none of the cells the grader runs.
SKIPPED_NAMES: frozenset[str] = frozenset(
    {
        "ClassificationData",
        "ClassifierConfig",
        "GeneratorConfig",
        "INSTALL_SAGEMAKER_SDK",
        "JOB_NAME",
        "LivePlot",
        "PROMPT",
        "TextSplit",
        "attention",
        "attention_weights",
        "axes",
        "bits_per_byte",
        "block",
        "both_plot",
        "build_classifier",
        "build_generator",
        "busiest_head",
        "c",
        "causal_metrics",
        "causal_model",
        "causal_plot",
        "causal_value",
        "chars",
        "classifier_for",
        "config",
        "data",
        "dataclasses",
        "first_block_queries_keys",
        "fit_classifier",
        "fit_generator",
        "gen_config",
        "gen_figures",
        "gen_head",
        "gen_keys",
        "gen_model",
        "gen_queries",
        "gen_samples",
        "gen_weights",
        "head",
        "job_plot",
        "keys",
        "leaky_config",
        "leaky_metrics",
        "leaky_model",
        "leaky_value",
        "left",
        "load_imdb",
        "load_shakespeare",
        "log",
        "m",
        "measure_speedups",
        "metrics",
        "model",
        "offset",
        "partial",
        "plot_speedups",
        "predict",
        "queries",
        "review",
        "right",
        "sagemaker",
        "sagemaker_round_trip",
        "sample",
        "sample_text",
        "smaller",
        "smoke_config",
        "smoke_data",
        "smoke_metrics",
        "smoke_model",
        "snippet",
        "speedup_experiment",
        "start",
        "text_column",
        "text_train",
        "text_val",
        "textwrap",
        "train_data",
        "unleaked_bits",
        "unleaked_model",
        "weights",
        "words",
        "zip_longest",
    }
)


def skipped_names_used(fn: Callable) -> list[str]:
    """The names in :data:`SKIPPED_NAMES` that ``fn`` (or a function nested in it) reads as
    globals."""
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return []
    used: set[str] = set()
    todo = [code]
    while todo:
        current = todo.pop()
        used.update(current.co_names)
        todo += [const for const in current.co_consts if isinstance(const, types.CodeType)]
    return sorted(used & SKIPPED_NAMES)
