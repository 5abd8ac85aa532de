"""Quality checks across samples: duplicates and near-duplicates.

Flagged samples are not deleted: they are returned with a flag and a reason so that a store or
a report can show them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree


def flag_duplicates(sites: pd.DataFrame, *, tolerance_m: float = 15.0) -> pd.DataFrame:
    """Add ``qa_flag`` (empty when fine) to a site table.

    A site within ``tolerance_m`` of an earlier site of the same source and sampling date is a
    near-duplicate (a re-submission or GPS jitter of one visit); the earlier one is kept.
    """
    out = sites.reset_index(drop=True).copy()
    out["qa_flag"] = ""
    if out.empty:
        return out
    tree = cKDTree(out[["x", "y"]].to_numpy(dtype=float))
    for i, j in sorted(tree.query_pairs(r=tolerance_m)):
        a, b = out.loc[i], out.loc[j]
        if a["source"] != b["source"] or a["sampling_date"] != b["sampling_date"] or out.at[i, "qa_flag"]:
            continue
        same = np.isclose(a["soc_stock_t_ha"], b["soc_stock_t_ha"]) and np.isclose(a["x"], b["x"])
        out.at[j, "qa_flag"] = (
            f"exact duplicate of {a['site_id']}" if same else f"within {tolerance_m:g} m of {a['site_id']} on the same day"
        )
    return out
