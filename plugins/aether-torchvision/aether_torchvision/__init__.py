"""Aether plugin: the `torchvision` backbone provider (`model.provider=torchvision`), the
`labels_txt` dataset format (`data.format=labels_txt`, also detected by `data.format=auto`) and a
`regression` task (`task=regression`: one number per image).

Aether imports this module through the ``aether.plugins`` entry point. Importing it only
registers lazy ``"module:attr"`` targets, so `aether list` and config validation stay fast:
torch and torchvision are imported when a run actually builds a model, and the format's module
(which imports no torch) when data is detected or loaded.
"""

from aether import registry
from aether.config.schema import NoOptions

__version__ = "0.2.0"

registry.backbones.register(
    "torchvision",
    "aether_torchvision.provider:TorchvisionProvider",
    config=NoOptions,
    help="torchvision classification models (e.g. mobilenet_v3_small); weights via model.weights=FILE",
    origin="aether-torchvision",
)
registry.adapters.register(
    "labels_txt",
    "aether_torchvision.labels_txt:LabelsTxt",
    config=NoOptions,
    help="labels.txt with one 'path label' line per image (classification)",
    origin="aether-torchvision",
)

from aether_torchvision.regression_options import RegressionCfg  # noqa: E402  (pydantic only)

registry.tasks.register(
    "regression",
    "aether_torchvision.regression:Regression",
    config=RegressionCfg,
    traits={"auto": "encoder_only"},
    help="one number per image from a path,value CSV/JSONL manifest; MSE on standardised targets; MAE, RMSE, R²",
    origin="aether-torchvision",
)
