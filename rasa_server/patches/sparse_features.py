"""Two COO sparse feature matrices joined directly.

Wraps `Features._combine_sparse_features` (private, rasa.shared.nlu.training_data.features).
Why: the NLU joins each message's sparse features (one matrix per featurizer) with
scipy.sparse.hstack, whose general block machinery is slow for two small matrices at a time.
Two COO matrices with as many rows (what the featurizers make) are joined by hstack_coo() into
the same matrix (values, dtype, index dtype, order of entries); anything else goes Rasa's way.
Rasa internals touched: `Features._combine_sparse_features`, `Features.features`,
`Features._cached_fingerprint` (private); scipy's private `scipy.sparse._sputils.get_index_dtype`
and `upcast`.
"""

from __future__ import annotations

import functools
from typing import Any

from rasa_server.patches import patch


def hstack_coo(left: Any, right: Any) -> Any:
    """scipy.sparse.hstack([left, right]) for two COO matrices with as many rows: the same
    matrix, made as scipy's bmat makes it, without its general block machinery."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse._sputils import get_index_dtype, upcast

    shape = (left.shape[0], left.shape[1] + right.shape[1])
    n_left, n_right = left.nnz, right.nnz
    data = np.empty(n_left + n_right, dtype=upcast(left.dtype, right.dtype))
    index_dtype = get_index_dtype(maxval=max(shape))
    row = np.empty(n_left + n_right, dtype=index_dtype)
    col = np.empty(n_left + n_right, dtype=index_dtype)
    data[:n_left] = left.data
    data[n_left:] = right.data
    np.add(left.row, 0, out=row[:n_left], dtype=index_dtype)
    np.add(right.row, 0, out=row[n_left:], dtype=index_dtype)
    np.add(left.col, 0, out=col[:n_left], dtype=index_dtype)
    np.add(right.col, left.shape[1], out=col[n_left:], dtype=index_dtype)
    return coo_matrix((data, (row, col)), shape=shape)


def install() -> None:
    from rasa.shared.nlu.training_data.features import Features

    original = Features._combine_sparse_features

    @functools.wraps(original)
    def _combine_sparse_features(self: Features, additional_features: Features) -> None:
        left, right = self.features, additional_features.features
        if left.format != "coo" or right.format != "coo" or left.shape[0] != right.shape[0]:
            return original(self, additional_features)
        self.features = hstack_coo(left, right)
        self._cached_fingerprint = None

    patch(Features, "_combine_sparse_features", _combine_sparse_features)
