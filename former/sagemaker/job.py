"""What a training job is: image, instances, processes, code, hyperparameters, ModelTrainer.
A job of more than one process (one per GPU, one per CPU instance) runs under torchrun."""

from __future__ import annotations

import secrets
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

from former.sagemaker.errors import SDK_REQUIREMENT as SDK_PACKAGE
from former.sagemaker.errors import SageMakerError
from former.sagemaker.progress import METRIC_DEFINITIONS
from former.settings import setting

ENTRY_SCRIPT = "model.py"
ENTRY_SCRIPT_SOURCE = """\
\"\"\"SageMaker training entry point, written by former.sagemaker: see former.container.\"\"\"

import sys

from former.container import main

if __name__ == "__main__":
    sys.exit(main())
"""
DEFAULT_INSTANCE_TYPE = "ml.g5.xlarge"
REGION_HELP = "default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's"
# End of patch of the AWS PyTorch training images (AWS Deep Learning Containers framework support
# policy); versions older than these are past theirs, newer ones not yet listed are supported.
END_OF_PATCH: dict[tuple[int, int], date] = {
    (2, 8): date(2026, 8, 6),
    (2, 9): date(2026, 10, 15),
    (2, 10): date(2027, 1, 21),
}
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
# CPU families; a generation digit follows the letter, so Trainium (ml.trn1) is not "ml.t".
CPU_INSTANCE_FAMILIES = ("ml.m", "ml.c", "ml.r", "ml.t")
NEURON_FAMILIES = ("trn", "inf")  # Trainium, Inferentia: no CUDA, the PyTorch image cannot run
# What model.py needs beyond the training image (which brings torch and numpy).
RUNTIME_REQUIREMENTS = "tqdm>=4.60\n"


@dataclass
class JobSettings:
    """One training job, and the flags of ``python -m former.sagemaker launch``."""

    GROUP: ClassVar[str] = "job"

    data: str | Path | None = setting(
        None, "IMDB tarball or CSV (uploaded once), or an s3:// URI (default: former's own)"
    )
    role: str | None = setting(None, "execution role ARN (default: $SAGEMAKER_ROLE, SageMaker's)")
    region: str | None = setting(None, REGION_HELP)
    instance_type: str = setting(DEFAULT_INSTANCE_TYPE, "")
    instance_count: int = setting(1, "")
    gpus_per_instance: int | None = setting(None, "for instance types not in the table", type=int)
    spot: bool = setting(True, "managed spot training", flag="--spot")
    max_run_seconds: int = setting(3 * 3600, "")
    max_wait_seconds: int | None = setting(None, "spot only (default: 2 x max run)", type=int)
    checkpoint_s3_uri: str | None = setting(None, "default: the SDK's")
    output_s3_uri: str | None = setting(None, "default: the SDK's")
    bucket: str | None = setting(None, "default: the SDK's")
    framework_version: str | None = setting(
        None,
        "PyTorch image, e.g. 2.10 (default: the newest AWS still patches, not newer than the "
        "local torch)",
    )
    image_uri: str | None = setting(None, "training image; overrides --framework-version")
    learner_module: str | Path | None = setting(None, "default: ./my_transformer_model.py")
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # model.py's flags
    base_job_name: str = setting("former-classify", "")
    volume_size_gb: int = setting(30, "")

    @property
    def processes_per_instance(self) -> int:
        gpus = self.gpus_per_instance
        return max(gpus if gpus is not None else gpus_per_instance(self.instance_type), 1)


def is_cpu_instance(instance_type: str) -> bool:
    """``ml.m5.xlarge``, ``ml.c7i.large``: a CPU family letter, then a digit."""
    family = instance_type.removeprefix("ml.").partition(".")[0]
    return len(family) > 1 and f"ml.{family[0]}" in CPU_INSTANCE_FAMILIES and family[1].isdigit()


def gpus_per_instance(instance_type: str) -> int:
    """Number of GPUs on one instance of ``instance_type`` (0 for CPU instances)."""
    if is_cpu_instance(instance_type):
        return 0
    if instance_type.removeprefix("ml.").startswith(NEURON_FAMILIES):
        raise SageMakerError(
            f"{instance_type} is a Trainium/Inferentia instance, which the PyTorch training image "
            "cannot use: pick a GPU type (ml.g5.xlarge) or a CPU type (ml.m5.xlarge)."
        )
    if instance_type not in GPUS_PER_INSTANCE:
        raise SageMakerError(
            f"Unknown instance type {instance_type!r}: pass --gpus-per-instance N so the launcher "
            "knows how many processes to start per instance."
        )
    return GPUS_PER_INSTANCE[instance_type]


def minor_version(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def is_supported(version: str, today: date) -> bool:
    """Whether AWS still patches the PyTorch training image of ``version`` on ``today`` (one
    newer than the table: yes)."""
    end = END_OF_PATCH.get(minor_version(version))
    return today <= end if end else minor_version(version) > max(END_OF_PATCH)


def pytorch_training_images(region: str) -> dict[str, list[str]]:
    """The SDK's PyTorch training images published in ``region``: version -> Python versions."""
    from sagemaker.core import image_uris

    versions = image_uris.config_for_framework("pytorch")["training"]["versions"].items()
    return {v: spec["py_versions"] for v, spec in versions if region in spec.get("registries", {})}


def choose_framework_version(local_torch: str, today: date, images: dict[str, list[str]]) -> str:
    """The newest image version AWS still supports on ``today``, not newer than the local torch
    (which loads the model ``fetch`` brings back), else the oldest supported one; with none
    supported (an old SDK), the newest available."""
    supported = sorted((v for v in images if is_supported(v, today)), key=minor_version)
    candidates = supported or sorted(images, key=minor_version)
    older = [v for v in candidates if minor_version(v) <= minor_version(local_torch)]
    if supported:
        return older[-1] if older else supported[0]
    return (older or candidates)[-1]


def today() -> date:
    return date.today()


def training_image(region: str, framework_version: str | None, instance_type: str) -> str:
    """ECR URI of the AWS PyTorch training image for ``region`` and ``framework_version`` (None:
    :func:`choose_framework_version`'s), its newest Python; prints what was chosen."""
    import torch
    from sagemaker.core import image_uris

    images = pytorch_training_images(region)
    if not images:
        raise SageMakerError(
            f"The SageMaker SDK knows no PyTorch training image in region {region!r}: pick "
            f"another region, upgrade the SDK (pip install -U '{SDK_PACKAGE}') or pass --image-uri."
        )
    if framework_version is None:
        version = choose_framework_version(torch.__version__, today(), images)
    else:
        found = [v for v in images if minor_version(v) == minor_version(framework_version)]
        if not found:
            available = ", ".join(sorted({".".join(map(str, minor_version(v))) for v in images}))
            raise SageMakerError(
                f"No PyTorch {framework_version} training image in region {region!r}: pick one "
                f"of {available} (--framework-version), or pass --image-uri."
            )
        version = max(found, key=lambda v: tuple(map(int, v.split("."))))
    py_version = sorted(images[version], key=lambda py: int(py.removeprefix("py")))[-1]
    try:
        uri = image_uris.retrieve(
            "pytorch", region, version, py_version, instance_type, image_scope="training"
        )
    except ValueError as error:
        raise SageMakerError(
            f"No PyTorch {version} {py_version} training image for {instance_type} in region "
            f"{region!r} ({error}): pick another --framework-version or pass --image-uri."
        ) from error
    note = "" if is_supported(version, today()) else " (past its end of patch: no more fixes)"
    print(f"Training image: PyTorch {version}, {py_version}{note}: {uri}", file=sys.stderr)
    return uri


def normalise_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """``model.py`` flags: keys as ``batch-size``, booleans as ``true``/``false``, all strings."""
    return {
        key.lstrip("-").replace("_", "-"): str(value).lower()
        if isinstance(value, bool)
        else str(value)
        for key, value in hyperparameters.items()
        if value is not None
    }


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
    image = settings.image_uri or training_image(
        sagemaker_session.boto_region_name, settings.framework_version, settings.instance_type
    )
    output = settings.output_s3_uri
    trainer = ModelTrainer(
        sagemaker_session=sagemaker_session,
        role=role,
        # The SDK adds the time to the second: a few random hex digits keep two launches in one
        # second from asking for the same name (SageMaker refuses the second).
        base_job_name=f"{settings.base_job_name}-{secrets.token_hex(2)}",
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
