"""Serving: an OpenAI-compatible server for any model or checkpoint, and the local web
labelling page over a run's store."""

from ._api import create_app, error_body, parse_chat_request
from ._batch import Batcher, BatchStats
from ._label_app import LabelApp, serve_labelling
from ._run import background, free_port, is_local, served_name

__all__ = [
    "BatchStats",
    "Batcher",
    "LabelApp",
    "background",
    "create_app",
    "error_body",
    "free_port",
    "is_local",
    "parse_chat_request",
    "serve_labelling",
    "served_name",
]
