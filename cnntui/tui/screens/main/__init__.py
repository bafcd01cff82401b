"""The main screen, in parts: screen.py puts them together (start reading there)."""

from .runs import Trainer
from .screen import MainScreen

__all__ = ["MainScreen", "Trainer"]
