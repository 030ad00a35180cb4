"""Train a CTransformer on IMDB sentiment: the SageMaker training entry point, also runnable locally.

    python model.py --epochs 1 --attention sdpa --data ../shared/data/imdb_sample.csv
    torchrun --nproc_per_node=2 model.py --attention sdpa          # data parallel, one machine
    python -m former.sagemaker launch --data aclImdb_v1.tar.gz     # as a SageMaker training job
    python model.py --help                                         # every hyperparameter

This file only adapts the container to the package: ``former.container`` honours the
SageMaker contract (hyperparameters as ``--key value``, the ``training`` channel,
``SM_MODEL_DIR``, checkpoints in ``/opt/ml/checkpoints``, metric lines, the failure
file, DistributedDataParallel under torchrun), and the launcher ships this same
adapter next to the ``former`` package.
"""

import sys

from former.container import main

if __name__ == "__main__":
    sys.exit(main())
