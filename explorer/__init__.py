"""Pruning Explorer's engine: plain Python shared by the app, the CLI and notebooks."""

from explorer.errors import ExplorerError

__all__ = ["ExplorerError"]
