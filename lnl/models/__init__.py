"""Networks: ``create_model(name, num_classes=...)``; every classifier has ``forward_features`` and
``forward_head`` so kNN, prototype and GMM-feature code never reaches into its layers."""

from lnl.models import (  # noqa: F401  (importing a model file registers its models)
    dividemix_resnet,
    ieg_nets,
    preact_resnet,
    proto_net,
    small_cnn,
    webscale_nets,
)
from lnl.models._registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
