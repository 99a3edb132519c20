"""A generated sentiment grammar with negation, intensifiers and contrast.

Sentences come from templates over a small lexicon of positive and negative adjectives.
The label (0 = negative, 1 = positive) follows from the grammar's rules:

* ``plain``      "the film is (very) good ."               -> polarity of the adjective
* ``negation``   "the film is not (very) good ."           -> flipped
* ``neither``    "the film is neither funny nor clever ."   -> flipped (both share a polarity)
* ``and``        "the film is funny and clever ."          -> the shared polarity
* ``contrast``   "the film is dull but brilliant ."        -> the adjective after "but"
* ``not_but``    "the film is not dull but brilliant ."    -> the adjective after "but"
* ``double``     "it is not true that the film is not good ." -> the adjective's polarity

Every sentence carries ground truth per word: its lexical polarity, its polarity as read in
the sentence (after negation), and whether it decides the label (the deciding adjectives
and the negations that scope over them). Word-level relevance of a sentiment classifier can
be compared with it, as in the negation analysis of :cite:`arras2019evaluating`.

``label_noise`` flips a fraction of the labels, and ``template_weights`` can make a
construction rare (for example double negation), so that a trained model makes real
mistakes that an explanation can reveal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "NEGATIVE",
    "POSITIVE",
    "TEMPLATES",
    "SentimentData",
    "Vocab",
    "make_sentiment",
    "sentiment_vocab",
]

POSITIVE = ("good", "great", "brilliant", "funny", "moving", "superb", "charming", "clever")
NEGATIVE = ("bad", "dull", "boring", "awful", "weak", "bland", "tedious", "clumsy")
NOUNS = ("film", "movie", "plot", "story", "acting", "script", "cast", "ending")
INTENSIFIERS = ("very", "really", "truly", "extremely")
FUNCTION_WORDS = (
    "the", "is", "not", "neither", "nor", "and", "but", "it", "true", "that", ".",
)
TEMPLATES = ("plain", "negation", "neither", "and", "contrast", "not_but", "double")
NEGATORS = ("not", "neither", "nor")

PAD = "<pad>"


@dataclass
class Vocab:
    """Word <-> index map; index 0 is the padding token ``"<pad>"``."""

    itos: list[str]
    stoi: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        if not self.itos or self.itos[0] != PAD:
            raise ValueError(f"the first word of a Vocab must be the padding token {PAD!r}")
        self.stoi = {word: k for k, word in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def pad_index(self) -> int:
        return 0

    def encode(self, words: Sequence[str]) -> list[int]:
        """Indices of ``words``; an unknown word raises ``KeyError`` naming it."""
        unknown = [w for w in words if w not in self.stoi]
        if unknown:
            raise KeyError(f"words not in the vocabulary: {unknown}")
        return [self.stoi[w] for w in words]

    def decode(self, indices: Sequence[int] | torch.Tensor, length: int | None = None) -> list[str]:
        """Words of ``indices`` (the first ``length`` of them, when given)."""
        if isinstance(indices, torch.Tensor):
            indices = indices.tolist()
        if length is not None:
            indices = indices[:length]
        return [self.itos[int(k)] for k in indices]


def sentiment_vocab() -> Vocab:
    """The grammar's vocabulary (fixed order, so indices never change)."""
    words = [PAD, *FUNCTION_WORDS, *INTENSIFIERS, *NOUNS, *POSITIVE, *NEGATIVE]
    return Vocab(words)


@dataclass
class SentimentData:
    """Generated sentences with labels and per-word ground truth.

    Attributes
    ----------
    tokens : torch.Tensor
        Word indices, int64 ``(N, T)``, padded with 0 after each sentence.
    lengths : torch.Tensor
        Sentence lengths, int64 ``(N,)``.
    labels : torch.Tensor
        Labels used for training, int64 ``(N,)`` (with label noise, if any).
    clean_labels : torch.Tensor
        Labels given by the grammar, int64 ``(N,)``.
    lexical : torch.Tensor
        Lexical polarity of each word, float32 ``(N, T)`` in {-1, 0, +1}.
    effective : torch.Tensor
        Polarity of each word as read in the sentence (negated inside a negation's scope),
        float32 ``(N, T)``.
    decisive : torch.Tensor
        Whether each word decides the label, bool ``(N, T)``.
    templates : list of str
        The template of each sentence.
    vocab : Vocab
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    clean_labels: torch.Tensor
    lexical: torch.Tensor
    effective: torch.Tensor
    decisive: torch.Tensor
    templates: list[str]
    vocab: Vocab

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def words(self, k: int) -> list[str]:
        """The words of sentence ``k`` (without padding)."""
        return self.vocab.decode(self.tokens[k], int(self.lengths[k]))

    def sentence(self, k: int) -> str:
        return " ".join(self.words(k))


def _polarity(word: str) -> int:
    return 1 if word in POSITIVE else -1 if word in NEGATIVE else 0


def _sentence(
    template: str, rng: np.random.Generator
) -> tuple[list[str], int, list[int], list[bool]]:
    """One sentence: words, label (0/1), effective polarity per word, decisive flags."""

    def adjective(polarity: int | None = None) -> str:
        if polarity is None:
            polarity = int(rng.choice([-1, 1]))
        pool = POSITIVE if polarity > 0 else NEGATIVE
        return str(rng.choice(pool))

    def maybe_intensifier() -> list[str]:
        return [str(rng.choice(INTENSIFIERS))] if rng.random() < 0.4 else []

    head = ["the", str(rng.choice(NOUNS)), "is"]
    if template == "plain":
        adj = adjective()
        words = [*head, *maybe_intensifier(), adj, "."]
        sign, deciding, negators = _polarity(adj), {len(words) - 2}, set()
    elif template == "negation":
        adj = adjective()
        words = [*head, "not", *maybe_intensifier(), adj, "."]
        sign, deciding, negators = -_polarity(adj), {len(words) - 2}, {3}
    elif template == "neither":
        pol = int(rng.choice([-1, 1]))
        a1, a2 = adjective(pol), adjective(pol)
        words = [*head, "neither", a1, "nor", a2, "."]
        sign, deciding, negators = -pol, {4, 6}, {3, 5}
    elif template == "and":
        pol = int(rng.choice([-1, 1]))
        a1, a2 = adjective(pol), adjective(pol)
        words = [*head, a1, "and", a2, "."]
        sign, deciding, negators = pol, {3, 5}, set()
    elif template == "contrast":
        pol = int(rng.choice([-1, 1]))
        a1, a2 = adjective(-pol), adjective(pol)
        words = [*head, a1, "but", a2, "."]
        sign, deciding, negators = pol, {5}, set()
    elif template == "not_but":
        pol = int(rng.choice([-1, 1]))
        a1, a2 = adjective(-pol), adjective(pol)
        words = [*head, "not", a1, "but", a2, "."]
        sign, deciding, negators = pol, {6}, set()
    elif template == "double":
        adj = adjective()
        words = ["it", "is", "not", "true", "that", *head, "not", adj, "."]
        sign, deciding, negators = _polarity(adj), {len(words) - 2}, {2, 8}
    else:
        raise ValueError(f"unknown template {template!r}; known: {TEMPLATES}")
    # effective polarity: an adjective in the scope of one negation is read flipped
    effective = [_polarity(w) for w in words]
    if template == "negation":
        effective[-2] = -effective[-2]
    elif template == "neither":
        effective[4], effective[6] = -effective[4], -effective[6]
    elif template == "not_but":
        effective[4] = -effective[4]
    decisive = [k in deciding or k in negators for k in range(len(words))]
    return words, int(sign > 0), effective, decisive


def make_sentiment(
    n: int,
    seed: int = 0,
    label_noise: float = 0.0,
    template_weights: dict[str, float] | None = None,
) -> SentimentData:
    """Generate ``n`` labelled sentences of the sentiment grammar (deterministic per seed).

    Parameters
    ----------
    n : int
        Number of sentences (at least 1).
    seed : int
        Seed of the generator.
    label_noise : float
        Probability of flipping each label in ``labels`` (``clean_labels`` keeps the
        grammar's label). In ``[0, 0.5)``.
    template_weights : dict, optional
        Relative frequency of each template (missing templates get weight 0). Default: all
        templates equally likely.

    Returns
    -------
    SentimentData
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0.0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must lie in [0, 0.5), got {label_noise}")
    weights = dict.fromkeys(TEMPLATES, 1.0) if template_weights is None else template_weights
    unknown = set(weights) - set(TEMPLATES)
    if unknown:
        raise ValueError(f"unknown templates {sorted(unknown)}; known: {TEMPLATES}")
    p = np.array([float(weights.get(t, 0.0)) for t in TEMPLATES])
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError("template_weights must be non-negative and not all zero")
    p = p / p.sum()
    rng = np.random.default_rng(seed)
    vocab = sentiment_vocab()
    rows = []
    for _ in range(n):
        template = str(rng.choice(TEMPLATES, p=p))
        rows.append((template, *_sentence(template, rng)))
    flips = rng.random(n) < label_noise
    length = max(len(r[1]) for r in rows)
    tokens = torch.zeros(n, length, dtype=torch.int64)
    lexical = torch.zeros(n, length)
    effective = torch.zeros(n, length)
    decisive = torch.zeros(n, length, dtype=torch.bool)
    for k, (_, words, _, eff, dec) in enumerate(rows):
        m = len(words)
        tokens[k, :m] = torch.tensor(vocab.encode(words))
        lexical[k, :m] = torch.tensor([float(_polarity(w)) for w in words])
        effective[k, :m] = torch.tensor(eff, dtype=torch.float32)
        decisive[k, :m] = torch.tensor(dec)
    clean = torch.tensor([r[2] for r in rows], dtype=torch.int64)
    labels = torch.where(torch.from_numpy(flips), 1 - clean, clean)
    return SentimentData(
        tokens=tokens,
        lengths=torch.tensor([len(r[1]) for r in rows], dtype=torch.int64),
        labels=labels,
        clean_labels=clean,
        lexical=lexical,
        effective=effective,
        decisive=decisive,
        templates=[r[0] for r in rows],
        vocab=vocab,
    )
