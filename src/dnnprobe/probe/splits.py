"""Cross-validation schemes: which stimuli each fold holds out, by scikit-learn's splitters.

Two schemes, chosen by ``probe.groups``:

- ``stratified`` (no groups; DNNBrain's): ``StratifiedKFold(cv)`` for class labels, ``KFold(cv)`` for a
  continuous target, without shuffling unless ``probe.shuffle``.
- ``grouped`` (``probe.groups`` names a ``.stim.csv`` column: concept, scene, object id): no group is
  ever split between a training and a test fold. ``StratifiedGroupKFold(cv)`` for class labels (each
  fold's class balance as close to the whole set's as whole groups allow), ``GroupKFold(cv)`` for a
  continuous target. Needed whenever several images show one thing (THINGS concepts, NSD/BOLD5000
  scenes): with stimulus-level folds a layer that only recognises the thing "decodes" any attribute
  of it, because the thing's other images sit in the training fold.

With ``probe.shuffle`` the splitters shuffle (``random_state = probe.seed``); the default keeps
DNNBrain's unshuffled split. To add a scheme, add one entry to :data:`SCHEMES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

Splits = list[tuple[np.ndarray, np.ndarray]]  # (train, test) stimulus indices per fold, ascending


@dataclass(frozen=True)
class Scheme:
    """One cross-validation scheme: scikit-learn splitter factories for class and continuous targets."""

    classes: Callable[[int, bool, int | None], Any]  # (n_splits, shuffle, random_state) -> splitter
    continuous: Callable[[int, bool, int | None], Any]
    grouped: bool  # the splitter's split() needs the stimuli's groups


SCHEMES = {
    "stratified": Scheme(lambda k, shuffle, seed: StratifiedKFold(k, shuffle=shuffle, random_state=seed),
                         lambda k, shuffle, seed: KFold(k, shuffle=shuffle, random_state=seed), grouped=False),
    "grouped": Scheme(lambda k, shuffle, seed: StratifiedGroupKFold(k, shuffle=shuffle, random_state=seed),
                      lambda k, shuffle, seed: GroupKFold(k, shuffle=shuffle, random_state=seed), grouped=True),
}


def scheme_name(groups: np.ndarray | None) -> str:
    return "stratified" if groups is None else "grouped"


def splitter(n_splits: int, regression: bool, groups: np.ndarray | None = None, shuffle: bool = False,
             seed: int = 0):
    """The scikit-learn splitter of the scheme `groups` selects (a GridSearchCV or cross_val_score takes it
    with ``groups=groups``)."""
    scheme = SCHEMES[scheme_name(groups)]
    make = scheme.continuous if regression else scheme.classes
    return make(n_splits, shuffle, seed if shuffle else None)


def make_splits(y: np.ndarray, n_splits: int, regression: bool, groups: np.ndarray | None = None,
                shuffle: bool = False, seed: int = 0) -> Splits:
    """(train, test) index pairs of `n_splits` folds over ``len(y)`` stimuli; `groups` ((n,) group of each
    stimulus, or None) selects the grouped scheme."""
    split = splitter(n_splits, regression, groups, shuffle, seed)
    return [(np.sort(train), np.sort(test)) for train, test in split.split(np.zeros((len(y), 1)), y, groups)]


def inner_splits(splits: Splits, y: np.ndarray, n_splits: int, regression: bool, groups: np.ndarray | None = None,
                 shuffle: bool = False, seed: int = 0) -> list[Splits]:
    """Per outer fold, the same scheme's `n_splits` folds of its training stimuli only (stimulus indices):
    what ``GridSearchCV(cv=<the scheme's splitter>)`` fitted on that training fold uses."""
    inner = []
    for train, _ in splits:
        sub_groups = None if groups is None else groups[train]
        inner.append([(train[a], train[b]) for a, b in make_splits(y[train], n_splits, regression, sub_groups,
                                                                   shuffle, seed)])
    return inner

