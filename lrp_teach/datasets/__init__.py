"""Data sets used by the book. Everything is generated or bundled; nothing is downloaded."""

from .arithmetic import ArithmeticData, ground_truth_scores, make_arithmetic
from .clevr_lite import ClevrLite, load_clevr_lite, make_clevr_lite
from .digits import Digits, add_watermark, load_digits
from .sentiment import SentimentData, Vocab, make_sentiment, sentiment_vocab

__all__ = [
    "ArithmeticData",
    "ClevrLite",
    "Digits",
    "SentimentData",
    "Vocab",
    "add_watermark",
    "ground_truth_scores",
    "load_clevr_lite",
    "load_digits",
    "make_clevr_lite",
    "make_arithmetic",
    "make_sentiment",
    "sentiment_vocab",
]
