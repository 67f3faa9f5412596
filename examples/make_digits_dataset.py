"""Write scikit-learn's bundled digits data (no download) to an ``.npz`` file.

    python examples/make_digits_dataset.py build/digits.npz

The file is what the examples' dataset holds: register it with
``synapse-ray backend add-dataset digits build/digits.npz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def main(out: str) -> None:
    digits = load_digits()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, X=digits.data.astype("float32") / 16.0, y=digits.target.astype("int64"))
    print(path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/digits.npz")
