"""The SageMaker training entry point, also runnable locally (``python model.py --help``).

    python model.py --epochs 1 --attention sdpa --data ../shared/data/imdb_sample.csv
    torchrun --nproc_per_node=2 model.py --attention sdpa          # data parallel, one machine

An adapter: ``former.container`` honours the SageMaker contract, and ``former.sagemaker`` ships
this same file next to the ``former`` package.
"""

import sys

from former.container import main

if __name__ == "__main__":
    sys.exit(main())
