"""The AU prior: a 12 x 12 float32 node-adjacency matrix from AU co-occurrence (AUWGCN.md
section 4).

For each expression, its parsed AU numbers that appear in the ROI map are kept in order. One
kept AU adds 1 to M[i, i] for each of its nodes i; two or more add, for every unordered pair of
kept AUs (a, b) taken by position, 1 to M[i, j] and M[j, i] for i in nodes(a), j in nodes(b).
Each row is then divided by (its L1 norm + 1e-6). Unlike the reference, AU codes are parsed
(`R12`, `A12B` and `12(B/C)` count as AU12), and by default the matrix is built per LOSO fold from
the training subjects only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from types import MappingProxyType
from typing import Mapping

import numpy as np

from spotting.channels import N_NODES

# AU number -> ROI nodes (node order of AUWGCN.md section 3); nodes 6 and 7 (nose) take no AU.
REFERENCE_AU_NODES: Mapping[int, tuple[int, ...]] = MappingProxyType(
    {
        1: (0, 1, 4, 5),
        2: (2, 3),
        12: (8, 10),
        14: (8, 10),
        25: (9, 11),
        26: (9, 11),
    }
)


@dataclass(frozen=True)
class PriorParams:
    """How the prior is built: `source` 'train' (training subjects of each fold, the default) or
    'all' (every annotation, test subjects included: the reference's choice); `au_nodes` the
    AU -> node map; `eps` added to each row's L1 norm."""

    source: str = "train"
    au_nodes: Mapping[int, tuple[int, ...]] = field(
        default_factory=lambda: dict(REFERENCE_AU_NODES)
    )
    eps: float = 1e-6

    def __post_init__(self):
        if self.source not in ("train", "all"):
            raise ValueError(f"prior source must be 'train' or 'all', got {self.source!r}")
        for au, nodes in self.au_nodes.items():
            if any(not 0 <= n < N_NODES for n in nodes):
                raise ValueError(
                    f"AU{au} maps to nodes {nodes}; nodes must lie in 0..{N_NODES - 1}"
                )


def au_prior(au_lists, params: PriorParams = PriorParams()) -> np.ndarray:
    """(12, 12) float32 row-normalised co-occurrence matrix.

    `au_lists`: one sequence of AU numbers per expression (e.g. [[1, 2], [12], [4, 12, 25]]);
    numbers absent from `params.au_nodes` are ignored."""
    m = np.zeros((N_NODES, N_NODES), dtype=np.float64)
    for aus in au_lists:
        kept = [int(a) for a in aus if int(a) in params.au_nodes]
        if len(kept) == 1:
            nodes = list(params.au_nodes[kept[0]])
            m[nodes, nodes] += 1
        else:
            for a, b in combinations(kept, 2):
                na, nb = list(params.au_nodes[a]), list(params.au_nodes[b])
                np.add.at(m, np.ix_(na, nb), 1)
                np.add.at(m, np.ix_(nb, na), 1)
    m /= np.abs(m).sum(axis=1, keepdims=True) + params.eps
    return m.astype(np.float32)


def prior_from_table(frame, subjects=None, params: PriorParams = PriorParams()) -> np.ndarray:
    """The prior from an annotation table's `au_codes` column, restricted to `subjects` (None: all
    rows)."""
    rows = frame if subjects is None else frame[frame["subject"].isin(list(subjects))]
    return au_prior(([c.number for c in codes] for codes in rows["au_codes"]), params)
