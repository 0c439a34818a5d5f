"""Networks: ``create_model(name, num_classes=...)``; every classifier has ``forward_features`` and
``forward_head`` so kNN, prototype and GMM-feature code never reaches into its layers."""

from lnl.models import preact_resnet, small_cnn  # noqa: F401  (registers the models)
from lnl.models._registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
