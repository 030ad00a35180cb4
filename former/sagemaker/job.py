"""What a training job is: its image, instances, processes, code, hyperparameters, ModelTrainer.

Every job with more than one process in all (one per GPU, one per CPU instance) runs under
torchrun, so several instances always train one model together. It ships only ``model.py``,
the installed ``former`` package and the learner's ``my_transformer_model.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from former.sagemaker.errors import SageMakerError
from former.sagemaker.progress import METRIC_DEFINITIONS

ENTRY_SCRIPT = "model.py"
ENTRY_SCRIPT_SOURCE = """\
\"\"\"SageMaker training entry point, written by former.sagemaker: see former.container.\"\"\"

import sys

from former.container import main

if __name__ == "__main__":
    sys.exit(main())
"""
DEFAULT_INSTANCE_TYPE = "ml.g5.xlarge"
PY_VERSION = "py312"
# GPUs per instance for the types a course is likely to use (the SDK's table misses most).
_SIZES = ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")
_EIGHT_GPUS = ("p3dn.24xlarge", "p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "p5e.48xlarge")
GPUS_PER_INSTANCE: dict[str, int] = {
    **{f"ml.{f}.{s}": 1 for f in ("g4dn", "g5", "g6", "g6e") for s in _SIZES},
    **{f"ml.{f}.{s}xlarge": 4 for f in ("g5", "g6", "g6e") for s in ("12", "24")},
    **{f"ml.{f}.48xlarge": 8 for f in ("g5", "g6", "g6e")},
    **{f"ml.{name}": 8 for name in (*_EIGHT_GPUS, "p5en.48xlarge")},
    **{"ml.g4dn.12xlarge": 4, "ml.p3.2xlarge": 1, "ml.p3.8xlarge": 4, "ml.p3.16xlarge": 8},
}
CPU_INSTANCE_FAMILIES = ("ml.m", "ml.c", "ml.r", "ml.t")
# What model.py needs beyond the training image (which brings torch and numpy).
RUNTIME_REQUIREMENTS = "tqdm>=4.60\n"


@dataclass
class JobSettings:
    """One training job. ``data``: a local IMDB tarball or CSV (uploaded once), an ``s3://``
    URI in the job's region, or None for the IMDB archive ``former`` finds itself."""

    data: str | Path | None = None
    role: str | None = None
    region: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    gpus_per_instance: int | None = None
    spot: bool = True
    max_run_seconds: int = 3 * 3600
    max_wait_seconds: int | None = None
    checkpoint_s3_uri: str | None = None
    output_s3_uri: str | None = None
    bucket: str | None = None
    framework_version: str = "2.8"
    image_uri: str | None = None
    learner_module: str | Path | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    base_job_name: str = "former-classify"
    volume_size_gb: int = 30

    @property
    def processes_per_instance(self) -> int:
        """One process per GPU, or one per CPU instance."""
        gpus = self.gpus_per_instance
        return max(gpus if gpus is not None else gpus_per_instance(self.instance_type), 1)


def gpus_per_instance(instance_type: str) -> int:
    """Number of GPUs on one instance of ``instance_type`` (0 for CPU instances)."""
    if instance_type.startswith(CPU_INSTANCE_FAMILIES):
        return 0
    if instance_type not in GPUS_PER_INSTANCE:
        raise SageMakerError(
            f"Unknown instance type {instance_type!r}: pass --gpus-per-instance N so the launcher "
            "knows how many processes to start per instance."
        )
    return GPUS_PER_INSTANCE[instance_type]


def training_image_uri(region: str, framework_version: str, instance_type: str) -> str:
    """ECR URI of the AWS PyTorch training image (py312) for ``region``."""
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve(
            "pytorch", region, framework_version, PY_VERSION, instance_type, image_scope="training"
        )
    except ValueError as error:
        raise SageMakerError(
            f"No PyTorch {framework_version} {PY_VERSION} training image for region {region!r} "
            f"({error}): pick another --framework-version or pass --image-uri."
        ) from error


def normalise_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """``model.py`` flags: keys as ``batch-size``, booleans as ``true``/``false``, all strings."""
    return {
        key.lstrip("-").replace("_", "-"): str(value).lower()
        if isinstance(value, bool)
        else str(value)
        for key, value in hyperparameters.items()
        if value is not None
    }


def learner_module_path(learner_module: str | Path | None, attention: str) -> Path | None:
    """The learner's attention module to ship, checked against the attention string."""
    module = attention.partition(":")[0] if ":" in attention else ""
    if not module or module.split(".")[0] in ("former", "torch"):
        path = Path.cwd() / (learner_module or "my_transformer_model.py")
        return path if path.is_file() else None  # shipped all the same, for the learner's use
    expected = Path(module.replace(".", "/") + ".py")
    path = Path.cwd() / (learner_module or expected)
    if not path.is_file():
        raise SageMakerError(
            f"attention {attention!r} needs {expected}, but {str(path)!r} does not exist: run "
            "the notebook cell that writes it (%%writefile my_transformer_model.py), pass "
            "--learner-module PATH, or train with --attention sdpa."
        )
    if path.name != expected.name:
        raise SageMakerError(
            f"attention {attention!r} imports module {module!r}, but the learner module "
            f"is {path.name!r}: name the file {expected.name} or change --attention."
        )
    return path


def stage_source(destination: Path, learner_module: Path | None) -> Path:
    """Write exactly what the job runs into ``destination``: model.py, former/, the learner file."""
    import former

    destination.mkdir(parents=True, exist_ok=True)
    (destination / ENTRY_SCRIPT).write_text(ENTRY_SCRIPT_SOURCE)
    ignored = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", ".DS_Store")
    package = Path(former.__file__).resolve().parent
    shutil.copytree(package, destination / "former", ignore=ignored, dirs_exist_ok=True)
    if learner_module is not None:
        shutil.copy2(learner_module, destination / learner_module.name)
    (destination / "requirements.txt").write_text(RUNTIME_REQUIREMENTS)
    return destination


def build_model_trainer(
    settings: JobSettings, data_uri: str | None, source_dir: Path, sagemaker_session: Any, role: str
) -> tuple[Any, list[Any]]:
    """A v3 ``ModelTrainer`` for ``settings``, and the input channels to train it with."""
    from sagemaker.core.shapes import MetricDefinition
    from sagemaker.core.training import configs
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun

    if settings.instance_count < 1:
        raise SageMakerError(f"instance count must be at least 1, got {settings.instance_count}.")
    max_run, max_wait = settings.max_run_seconds, None
    if settings.spot:
        max_wait = settings.max_wait_seconds or 2 * max_run
        if max_wait < max_run:
            raise SageMakerError(
                f"max wait ({max_wait}s) must be at least the max run time ({max_run}s) for "
                "managed spot training."
            )
    processes = settings.processes_per_instance
    # torchrun joins every process on every host into one job (gloo on CPU, nccl on GPU).
    several = processes * settings.instance_count > 1
    image = settings.image_uri or training_image_uri(
        sagemaker_session.boto_region_name, settings.framework_version, settings.instance_type
    )
    output = settings.output_s3_uri
    trainer = ModelTrainer(
        sagemaker_session=sagemaker_session,
        role=role,
        base_job_name=settings.base_job_name,
        training_image=image,
        source_code=configs.SourceCode(
            source_dir=str(source_dir), entry_script=ENTRY_SCRIPT, requirements="requirements.txt"
        ),
        distributed=Torchrun(process_count_per_node=processes) if several else None,
        compute=configs.Compute(
            instance_type=settings.instance_type,
            instance_count=settings.instance_count,
            volume_size_in_gb=settings.volume_size_gb,
            enable_managed_spot_training=settings.spot,
        ),
        stopping_condition=configs.StoppingCondition(
            max_runtime_in_seconds=max_run, max_wait_time_in_seconds=max_wait
        ),
        checkpoint_config=configs.CheckpointConfig(
            s3_uri=settings.checkpoint_s3_uri, local_path="/opt/ml/checkpoints"
        ),
        output_data_config=configs.OutputDataConfig(s3_output_path=output) if output else None,
        hyperparameters=normalise_hyperparameters(settings.hyperparameters),
        # Unbuffered output, so metric lines reach CloudWatch (and the metric regexes) at once.
        environment={"PYTHONUNBUFFERED": "1"},
    ).with_metric_definitions(
        [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS]
    )
    channel = configs.InputData(channel_name="training", data_source=data_uri)
    return trainer, [channel] if data_uri else []
