"""Aether plugin: the `torchvision` backbone provider (`model.provider=torchvision`) and a
`regression` task (`task=regression`: one number per image).

Aether imports this module through the ``aether.plugins`` entry point. Importing it only
registers a lazy ``"module:attr"`` target, so `aether list` and config validation stay fast:
torch and torchvision are imported when a run actually builds a model.
"""

from aether import registry
from aether.config.schema import NoOptions

__version__ = "0.1.0"

registry.backbones.register(
    "torchvision",
    "aether_torchvision.provider:TorchvisionProvider",
    config=NoOptions,
    help="torchvision classification models (e.g. mobilenet_v3_small); weights via model.weights=FILE",
    origin="aether-torchvision",
)

from aether_torchvision.regression_options import RegressionCfg  # noqa: E402  (pydantic only)

registry.tasks.register(
    "regression",
    "aether_torchvision.regression:Regression",
    config=RegressionCfg,
    traits={"auto": "dense"},
    help="one number per image from a path,value CSV/JSONL manifest; MSE on standardised targets; MAE, RMSE, R²",
    origin="aether-torchvision",
)
