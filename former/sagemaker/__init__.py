"""Train ``model.py`` as an Amazon SageMaker job and bring the model back (SageMaker SDK v3).

Every call takes the job's name, so a restarted notebook reattaches with ``follow(name)``; AWS
failures raise :class:`SageMakerError`, one line that says what to do. Nothing imports the SDK
(the ``[sagemaker]`` extra) before a job is launched.
"""

from former.sagemaker.errors import JobFailedError as JobFailedError
from former.sagemaker.errors import SageMakerError as SageMakerError
from former.sagemaker.errors import sdk_missing as sdk_missing
from former.sagemaker.fetch import accuracy_on_test_reviews as accuracy_on_test_reviews
from former.sagemaker.fetch import fetch_model as fetch_model
from former.sagemaker.fetch import load_fetched_model as load_fetched_model
from former.sagemaker.launch import install_sdk as install_sdk
from former.sagemaker.launch import launch_training_job as launch_training_job
from former.sagemaker.launch import sdk_installed as sdk_installed
from former.sagemaker.progress import follow as follow
from former.sagemaker.progress import job_metrics as job_metrics
from former.sagemaker.progress import job_status as job_status
from former.sagemaker.progress import stop_job as stop_job
