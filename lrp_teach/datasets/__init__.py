"""Data sets used by the book. Everything is generated or bundled; nothing is downloaded."""

from .arithmetic import ArithmeticData, ground_truth_scores, make_arithmetic
from .digits import Digits, add_watermark, load_digits
from .sentiment import SentimentData, Vocab, make_sentiment, sentiment_vocab

__all__ = [
    "ArithmeticData",
    "Digits",
    "SentimentData",
    "Vocab",
    "add_watermark",
    "ground_truth_scores",
    "load_digits",
    "make_arithmetic",
    "make_sentiment",
    "sentiment_vocab",
]
