"""Settings and their flags: one field declares a setting (default, help, flag names, who may
set it); :func:`add_flags` makes the flags of a settings class, :func:`read_flags` reads them."""

from __future__ import annotations

import argparse
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from former.modules import check_heads_divide

CLI, JOB = "cli", "job"  # the local command lines; a SageMaker job's hyperparameters (model.py)
LR_DECAYS = ("cosine", "linear", "constant")
BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    short: str | None = None,
    off: str | None = None,
    off_help: str | None = None,
    group: str | None = None,
    only: str | None = None,
    **argparse_options: Any,
) -> Any:
    """A dataclass field that is also a flag: ``--field-name`` unless ``flag`` names it;
    ``off`` names a boolean's negative flag on the command line (default ``--no-NAME``);
    ``only``: CLI or JOB, when the other may not set it."""
    facts = {"help": help, "flag": flag, "short": short, "off": off, "off_help": off_help}
    facts |= {"group": group, "only": only, "argparse": argparse_options}
    return field(default=default, metadata=facts)


def str2bool(value: str) -> bool:
    """``true``/``false`` in any case (also yes/no, 1/0), as SageMaker passes booleans."""
    if str(value).strip().lower() not in BOOLEANS:
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return BOOLEANS[str(value).strip().lower()]


def add_flags(
    parser: argparse.ArgumentParser, cls: type, audience: str, **defaults: Any
) -> dict[str, Any]:
    """A flag for every field of ``cls`` that ``audience`` may set, defaulting to the field's
    default (or ``defaults``); returns the argument groups by name."""
    groups: dict[str, Any] = {}
    for item in fields(cls):
        facts = item.metadata
        if not facts or facts["only"] not in (None, audience):
            continue
        title = facts["group"] or cls.GROUP
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        add_flag(groups[title], item, audience, defaults.get(item.name, item.default))
    return groups


def add_flag(group: Any, item: Field, audience: str, default: Any) -> None:
    """One field's flag: JOB takes every spelling (SageMaker passes ``batch_size``) and
    true/false; CLI a short name, and switches."""
    facts, name = item.metadata, item.name.replace("_", "-")
    long, text = facts["flag"] or f"--{name}", facts["help"]
    if default not in (None, ""):
        text = f"{text} (default: {default})" if text else f"default: {default}"
    options = {"dest": item.name, "default": default, "help": text, **facts["argparse"]}
    if audience == JOB:
        names = dict.fromkeys([f"--{name}", f"--{item.name}", long])  # no repeats, in order
        if isinstance(default, bool):
            options |= {"type": str2bool, "metavar": "true|false"}
        group.add_argument(*names, **{"type": type(default), **options})
    elif isinstance(default, bool):
        add_switch(group, item, default, options)
    else:
        kind = {"type": type(default)} if default is not None else {}
        group.add_argument(*filter(None, (facts["short"], long)), **{**kind, **options})


def add_switch(group: Any, item: Field, default: bool, options: dict[str, Any]) -> None:
    """A boolean on the command line: ``--name`` turns it on (when off by default, or ``flag``
    names it), the ``off`` flag (``--no-name``) turns it off (when on by default, or named)."""
    facts, name = item.metadata, item.name.replace("_", "-")
    pair = group.add_mutually_exclusive_group()
    if not default or facts["flag"]:
        on = filter(None, (facts["short"], facts["flag"] or f"--{name}"))
        pair.add_argument(*on, action="store_true", **options)
    if default or facts["off"]:
        off_help = facts["off_help"] or (None if facts["flag"] else facts["help"])
        off = {"dest": item.name, "default": default, "help": off_help}
        pair.add_argument(facts["off"] or f"--no-{name}", action="store_false", **off)


def read_flags(cls: type, args: argparse.Namespace) -> Any:
    """The ``cls`` settings in parsed ``args`` (a field without a flag keeps its default)."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def check_positive(settings: Any, *names: str) -> None:
    """Raise unless each named setting is at least 1."""
    for name in names:
        if getattr(settings, name) < 1:
            raise ValueError(f"{name} must be at least 1; got {getattr(settings, name)}.")


@dataclass
class RunSettings:
    """What every training run's settings hold: the model's shape, the optimizer, the seed. A
    task's config subclasses it. REPORTING_ONLY settings never change what a run learns: a run
    may resume with others."""

    emb: int = setting(64, "embedding size", flag="--embedding", short="-E", group="model")
    heads: int = setting(4, "attention heads", short="-H", group="model")
    depth: int = setting(1, "transformer blocks", short="-d", group="model")
    dropout: float = setting(0.1, "dropout rate", group="model")
    wide: bool = setting(False, "wide attention: every head sees all of emb", group="model")
    attention: str = setting(
        "sdpa",
        "the attention function: 'sdpa' (PyTorch's fused kernel) or your own as "
        "'module:function', e.g. my_transformer_model:multihead_attention",
        group="model",
    )
    batch_size: int = setting(64, "examples per batch", short="-b")
    lr: float = setting(3e-3, "peak learning rate (AdamW)", flag="--learn-rate", short="-l")
    lr_warmup: int = setting(2_500, "linear warm-up length, in training examples")
    lr_decay: str = setting(
        "cosine", "decay after the warm-up, to zero at the end", choices=LR_DECAYS
    )
    weight_decay: float = setting(0.01, "AdamW weight decay (weight matrices only)")
    gradient_clipping: float = setting(1.0, "clip the gradient norm to this (0: off)")
    seed: int = setting(1, "seed for weights and data order", flag="--random-seed", short="-r")
    final: bool = setting(False, "evaluate on the test split", short="-f")

    GROUP: ClassVar[str] = "training"
    KIND: ClassVar[str] = "run"
    REPORTING_ONLY: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def default(name: str, value: Any) -> Any:
        """The field ``name`` of :class:`RunSettings`, with another default."""
        return field(default=value, metadata=RunSettings.__dataclass_fields__[name].metadata)

    def __post_init__(self) -> None:
        check_positive(self, "emb", "heads", "depth", "batch_size")
        check_heads_divide(self.emb, self.heads, self.wide)
        if self.lr <= 0:
            raise ValueError(f"the learning rate must be positive; got {self.lr}.")
        if self.lr_decay not in LR_DECAYS:
            decays = sorted(LR_DECAYS)
            raise ValueError(f"unknown learning-rate decay {self.lr_decay!r}; use one of {decays}.")
        if self.lr_warmup < 0:
            raise ValueError(f"lr_warmup must be 0 or more; got {self.lr_warmup}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}.")

    def model_shape(self) -> dict[str, Any]:
        """The keyword arguments every model takes from its settings."""
        return {name: getattr(self, name) for name in ("emb", "heads", "depth", "wide", "dropout")}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Rebuild settings saved with :meth:`to_dict`, refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ValueError(f"unknown {cls.KIND} settings {unknown}; known: {sorted(known)}.")
        return cls(**data)

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """``name: saved -> current`` for each setting that differs from ``saved`` (settings
        missing from it, added later, count as their defaults), reporting-only ones aside."""
        current = self.to_dict()
        saved = {f.name: f.default for f in fields(self)} | saved
        names = sorted((set(saved) | set(current)) - set(self.REPORTING_ONLY))
        changed = [name for name in names if saved.get(name) != current.get(name)]
        return [f"{name}: {saved.get(name)!r} -> {current.get(name)!r}" for name in changed]


@dataclass
class RunOptions:
    """How a run executes, never what it learns: not saved with it."""

    GROUP: ClassVar[str] = "data and run"

    device: str = setting("auto", "auto (cuda, mps, then cpu), cpu, cuda, cuda:N or mps")
    out: Path | None = setting(
        None, "folder for checkpoints and model.pt (default: not saved)", type=Path, only=CLI
    )
    resume: bool = setting(False, "continue the run saved in --out", only=CLI)
    threads: int | None = setting(
        None, "CPU threads for torch (default: torch's choice)", type=int, only=CLI
    )
    progress: bool = setting(True, "no progress bar (none without a terminal)", only=CLI)
    download: bool = setting(False, "download IMDB when no data are given", only=JOB)
    checkpoint_dir: str = setting("", "checkpoints (default: /opt/ml/checkpoints)", only=JOB)
    checkpoint_every: int = setting(200, "optimizer steps between checkpoints", only=JOB)
    model_dir: str = setting("", "the saved model (default: $SM_MODEL_DIR)", only=JOB)
    output_data_dir: str = setting("", "metrics.json (default: $SM_OUTPUT_DATA_DIR)", only=JOB)
    failure_file: str = setting("", "why the job failed (default: $SM_OUTPUT_FAILURE)", only=JOB)
