"""The AU prior rebuilt by hand from a small table (AUWGCN.md section 4)."""

import numpy as np
import pandas as pd
import pytest

from spotting.au_codes import parse_au_string
from spotting.prior import PriorParams, au_prior, prior_from_table


def normalise(m):
    return (m / (np.abs(m).sum(axis=1, keepdims=True) + 1e-6)).astype(np.float32)


def test_single_au_adds_to_the_diagonal():
    m = np.zeros((12, 12))
    for i in (8, 10):  # AU12 -> nodes 8, 10
        m[i, i] = 2  # two expressions with only AU12
    np.testing.assert_allclose(au_prior([[12], [12]]), normalise(m), rtol=1e-6)


def test_pairs_add_symmetric_blocks_and_unknown_aus_are_ignored():
    # [1, 2]: AU1 {0,1,4,5} x AU2 {2,3} both ways; [4, 12]: 4 is not mapped -> AU12 alone.
    m = np.zeros((12, 12))
    for i in (0, 1, 4, 5):
        for j in (2, 3):
            m[i, j] += 1
            m[j, i] += 1
    m[8, 8] += 1
    m[10, 10] += 1
    np.testing.assert_allclose(au_prior([[1, 2], [4, 12], [4], []]), normalise(m), rtol=1e-6)


def test_three_aus_give_every_pair_by_position():
    # [12, 25, 14]: pairs (12,25), (12,14), (25,14); AU12 and AU14 share nodes {8, 10}.
    m = np.zeros((12, 12))
    for a, b in (((8, 10), (9, 11)), ((8, 10), (8, 10)), ((9, 11), (8, 10))):
        for i in a:
            for j in b:
                m[i, j] += 1
                m[j, i] += 1
    got = au_prior([[12, 25, 14]])
    np.testing.assert_allclose(got, normalise(m), rtol=1e-6)
    assert got.dtype == np.float32 and got.shape == (12, 12)
    assert (got[6] == 0).all() and (got[7] == 0).all()  # nose nodes take part in no AU


def test_prior_per_fold_from_training_subjects_and_parsed_codes():
    frame = pd.DataFrame({
        "subject": ["s1", "s1", "s2"],
        "au_codes": [parse_au_string(a).codes for a in ("R1+R2", "A12B", "25")],
    })
    train_only = prior_from_table(frame, subjects=["s1"])
    np.testing.assert_allclose(train_only, au_prior([[1, 2], [12]]))
    everyone = prior_from_table(frame)
    np.testing.assert_allclose(everyone, au_prior([[1, 2], [12], [25]]))
    assert not np.allclose(train_only, everyone)


def test_configurable_roi_map():
    params = PriorParams(au_nodes={4: (6, 7)})
    m = au_prior([[4]], params)
    assert m[6, 6] == pytest.approx(1 - 1e-6, rel=1e-5) and m[0].sum() == 0
    with pytest.raises(ValueError, match="nodes"):
        PriorParams(au_nodes={4: (12,)})
