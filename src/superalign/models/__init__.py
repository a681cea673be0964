"""Chat models: the protocol, the backends and the bundled default."""

from ._base import ChatModel, apply_stop
from ._bundled import BUNDLED, DEFAULT_MODEL
from ._bundled import home as bundled_home
from ._bundled import resolve as resolve_bundled
from ._bundled import status as bundled_status
from ._common import base_model as base_network
from ._hf import HFChatModel, HFSettings, resolve_path
from ._load import ModelSpec, load_model, parse_model_ref, validate_spec
from ._mock import MockModel
from ._openai import OpenAIChatModel, OpenAISettings
from ._precision import training_precision
from ._served import RolloutSettings

__all__ = [
    "BUNDLED",
    "DEFAULT_MODEL",
    "ChatModel",
    "HFChatModel",
    "HFSettings",
    "MockModel",
    "ModelSpec",
    "OpenAIChatModel",
    "OpenAISettings",
    "RolloutSettings",
    "apply_stop",
    "base_network",
    "bundled_home",
    "bundled_status",
    "load_model",
    "parse_model_ref",
    "resolve_bundled",
    "resolve_path",
    "training_precision",
    "validate_spec",
]
