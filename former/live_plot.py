"""``LivePlot``: training loss and a validation metric, redrawn in a notebook after each
evaluation, for a local run (``on_eval=LivePlot()``), several runs on the same axes
(``on_eval=plot.run(name)``) or a SageMaker job (``follow(name, on_metrics=LivePlot())``)."""

from __future__ import annotations

from typing import Any

# The x-axis, first found first: a local run reports the step; a SageMaker job's metric lines,
# parsed by its metric definitions, may carry only the epoch.
X_KEYS = ("step", "epoch")


class LivePlot:
    """Training loss and ``metric``, redrawn in place after each evaluation; ``runs``: curves
    drawn before (another plot's ``runs``)."""

    def __init__(
        self,
        metric: str = "val_acc",
        title: str = "validation accuracy",
        runs: dict[str, list[dict]] | None = None,
    ) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        self.metric, self.title = metric, title
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

    def draw(self) -> None:
        records = [m for history in self.runs.values() for m in history]
        x_key = next((key for key in X_KEYS if all(key in m for m in records)), None)
        for ax, key, title in (
            (self.ax_loss, "train_loss", "training loss"),
            (self.ax_metric, self.metric, self.title),
        ):
            ax.clear()
            for name, history in self.runs.items():
                xs = [m[x_key] if x_key else i for i, m in enumerate(history, 1)]
                ys = [m.get(key, float("nan")) for m in history]
                ax.plot(xs, ys, marker="o", label=name)
            ax.set_xlabel(x_key or "evaluation")
            ax.set_title(title)
            if len(self.runs) > 1:
                ax.legend()
        self.fig.tight_layout()
        if self.handle is not None:
            self.handle.update(self.fig)
