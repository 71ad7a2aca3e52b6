"""``python -m involution_ext.evaluate``: ImageNet top-1/top-5 of a RedNet checkpoint (see
:mod:`involution_ext.apps.evaluate`)."""

import sys

from .apps.evaluate import evaluate_folder, load_model, main

__all__ = ["evaluate_folder", "load_model", "main"]

if __name__ == "__main__":
    sys.exit(main())
