"""Applications built on the library: the RedNet training recipe (``python -m
involution_ext.apps.train``), the kernel heat-map tool (:mod:`.heatmap`, the paper's Fig. 3) and
the demo behind ``python -m involution_ext demo``.

They use the library's public layers (op → functional → modules → models → checkpoints) and
nothing in the library imports them, so ``import involution_ext`` never pulls in their
dependencies (scikit-learn, Pillow, matplotlib, tqdm).
"""
