"""``LivePlot``: training loss and a validation metric, redrawn in a notebook after each evaluation.

One implementation for every curve the lab draws: a local run (``on_eval=LivePlot()``), several
runs on the same axes (``on_eval=plot.run("name")``) and a SageMaker job followed from its log
lines (``follow(name, on_metrics=LivePlot())``), whose lines may carry ``epoch`` but no ``step``.
"""

from __future__ import annotations

from typing import Any

# What a curve's x-axis is read from, first found first: local runs report the step; a
# SageMaker job's metric lines are parsed by its metric definitions, which may lack it.
X_KEYS = ("step", "epoch")


class LivePlot:
    """Training loss and a validation metric, redrawn in place after each evaluation.

    Pass it as ``on_eval`` (or ``on_metrics``), or draw several runs on the same axes:
    ``on_eval=plot.run("name")``. ``x``: the key plotted along the x-axis; None takes the first
    of ``step``, ``epoch`` that the metrics carry, else the evaluation's number.
    """

    def __init__(
        self,
        metric: str = "val_acc",
        title: str = "validation accuracy",
        runs: dict[str, list[dict]] | None = None,
        x: str | None = None,
    ) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        self.metric, self.title, self.x = metric, title, x
        self.runs: dict[str, list[dict]] = {name: list(h) for name, h in (runs or {}).items()}
        self.fig, (self.ax_loss, self.ax_metric) = plt.subplots(1, 2, figsize=(9, 3))
        # Outside a notebook (a script, a test) display prints once and returns no handle.
        self.handle = display(self.fig, display_id=True)
        plt.close(self.fig)  # shown through the handle only, not again at the cell's end

    def run(self, name: str):
        """The ``on_eval`` callback of a curve labelled ``name``."""
        history = self.runs.setdefault(name, [])

        def record(metrics: dict[str, Any]) -> None:
            history.append(dict(metrics))
            self.draw()

        return record

    def __call__(self, metrics: dict[str, Any]) -> None:
        self.run("")(metrics)

    def x_key(self) -> str | None:
        """The key along the x-axis: ``x``, or the first of ``X_KEYS`` every evaluation has."""
        if self.x is not None:
            return self.x
        records = [m for history in self.runs.values() for m in history]
        return next((key for key in X_KEYS if records and all(key in m for m in records)), None)

    def curve(self, name: str, key: str) -> tuple[list[float], list[float]]:
        """(x values, ``key`` values) of run ``name``; nan where an evaluation lacks ``key``."""
        history, x_key = self.runs[name], self.x_key()
        xs = [m[x_key] if x_key else i for i, m in enumerate(history, 1)]
        return xs, [m.get(key, float("nan")) for m in history]

    def draw(self) -> None:
        x_label = self.x_key() or "evaluation"
        for ax, key, title in (
            (self.ax_loss, "train_loss", "training loss"),
            (self.ax_metric, self.metric, self.title),
        ):
            ax.clear()
            for name in self.runs:
                ax.plot(*self.curve(name, key), marker="o", label=name)
            ax.set_xlabel(x_label)
            ax.set_title(title)
            if len(self.runs) > 1:
                ax.legend()
        self.fig.tight_layout()
        if self.handle is not None:
            self.handle.update(self.fig)
