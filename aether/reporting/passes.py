"""One evaluation pass of a run's best model over a split, the loop that the analysis's
probabilities (aether.reporting.analysis) and embeddings (aether.reporting.embeddings) share."""

from __future__ import annotations

from typing import Any, List


def eval_pass(module: Any, datamodule: Any, split: str, fn: Any) -> List[Any]:
    """`fn(x)` of each batch of the split's images, in `bundle.splits[split]` order: the
    evaluation transform, the module's device and dtype, eval mode, unsharded (only rank 0
    calls this). The one loop behind the probabilities and the embeddings."""
    import torch
    from torch.utils.data import DataLoader

    from aether.data.loaders import loader_settings

    n = len(datamodule.bundle.splits[split])
    settings = {**loader_settings(datamodule.cfg, n, train=False), "shuffle": False, "drop_last": False}
    loader = DataLoader(datamodule.dataset(split, False), collate_fn=datamodule.collate, **settings)
    param = next(module.parameters())
    was_training = module.training
    module.eval()
    out: List[Any] = []
    try:
        with torch.no_grad():
            for x, y in loader:
                x = x.to(param.device, non_blocking=True)
                x, _ = datamodule.on_after_batch_transfer((x, y), 0)  # the cache's uint8 -> normalised
                out.append(fn(x.to(param.dtype) if x.is_floating_point() else x))
    finally:
        module.train(was_training)
    return out
