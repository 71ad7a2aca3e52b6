"""Official RedNet checkpoints written from the naming rules of the released mmcls files,
independently of our modules: the key -> shape layout and a random checkpoint in that layout."""

from __future__ import annotations

import torch

DEPTHS = (26, 38, 50, 101, 152)


def bn_entries(prefix, channels):
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def official_layout(depth, num_classes=1000):
    """Key -> shape, written from the naming rules of the official mmcls checkpoints
    (independently of our modules)."""
    blocks = {26: (1, 2, 4, 1), 38: (2, 3, 5, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}[depth]
    keys = {"stem.0.conv.weight": (32, 3, 3, 3), **bn_entries("stem.0.bn", 32),
            "stem.1.conv1.conv.weight": (8, 32, 1, 1), **bn_entries("stem.1.conv1.bn", 8),
            "stem.1.conv2.conv.weight": (9 * 2, 8, 1, 1), "stem.1.conv2.conv.bias": (9 * 2,),
            **bn_entries("stem.2", 32), "stem.4.conv.weight": (64, 32, 3, 3), **bn_entries("stem.4.bn", 64)}
    cin = 64
    for stage, n in enumerate(blocks):
        cout = 256 * 2**stage
        mid = cout // 4
        for b in range(n):
            p = f"layer{stage + 1}.{b}"
            inp = cin if b == 0 else cout
            keys.update({f"{p}.conv1.weight": (mid, inp, 1, 1), **bn_entries(f"{p}.bn1", mid),
                         f"{p}.conv2.conv1.conv.weight": (mid // 4, mid, 1, 1), **bn_entries(f"{p}.conv2.conv1.bn", mid // 4),
                         f"{p}.conv2.conv2.conv.weight": (49 * (mid // 16), mid // 4, 1, 1),
                         f"{p}.conv2.conv2.conv.bias": (49 * (mid // 16),),
                         **bn_entries(f"{p}.bn2", mid), f"{p}.conv3.weight": (cout, mid, 1, 1), **bn_entries(f"{p}.bn3", cout)})
            if b == 0:
                keys.update({f"{p}.downsample.0.weight": (cout, inp, 1, 1), **bn_entries(f"{p}.downsample.1", cout)})
        cin = cout
    state = {f"backbone.{k}": v for k, v in keys.items()}
    state.update({"head.fc.weight": (num_classes, 2048), "head.fc.bias": (num_classes,)})
    return state


def official_checkpoint(path, depth=26, num_classes=1000, drop=(), extra=(), reshape=None):
    gen = torch.Generator().manual_seed(depth)
    state = {}
    for key, shape in official_layout(depth, num_classes).items():
        if key in drop:
            continue
        if reshape and key in reshape:
            shape = reshape[key]
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.05
    for key in extra:
        state[key] = torch.zeros(3)
    torch.save({"meta": {"mmcls_version": "0.12.0", "epoch": 130}, "state_dict": state}, path)
    return state


def paddle_layout(depth, num_classes=1000):
    """Key -> shape of a PaddleClas RedNet ``.pdparams`` file, from Paddle's naming rules: no
    ``backbone.`` prefix, BatchNorm statistics named ``_mean``/``_variance`` (and no
    ``num_batches_tracked``), the classifier as ``fc`` with its weight stored [in, out]."""
    layout = {}
    for key, shape in official_layout(depth, num_classes).items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("head.fc."):
            layout[key[len("head."):]] = shape[::-1]
            continue
        key = key[len("backbone."):].replace(".running_mean", "._mean").replace(".running_var", "._variance")
        layout[key] = shape
    return layout


def write_pdparams(path, depth, num_classes=1000, protocol=4, seed=0):
    """Writes a ``.pdparams`` file as ``paddle.save`` does (a pickle of a dict of numpy float32
    arrays plus the ``StructuredToParameterName@@`` entry) and returns the arrays."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in paddle_layout(depth, num_classes).items():
        value = rng.random(shape) + 0.5 if key.endswith("_variance") else rng.standard_normal(shape) * 0.05
        arrays[key] = value.astype(np.float32)
    payload = dict(arrays)
    payload["StructuredToParameterName@@"] = {k: f"param_{i}" for i, k in enumerate(arrays)}
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=protocol)
    return arrays
