"""The SageMaker training entry point (see ``former.container``), also run locally:
``python model.py --help``, or ``torchrun --nproc_per_node=2 model.py`` for data parallel."""

import sys

from former.container import main

if __name__ == "__main__":
    sys.exit(main())
