"""The learning spam classifier: features, online model, persistence, learning service."""

from .classifier import Classifier, SpamScore

__all__ = ["Classifier", "SpamScore"]
