"""A run's table (one row per request) and what is computed from it: summaries, time lines.

pandas and numpy are imported where a table is built or read, not with the package:
serving an app (``start_app``) or importing ``labkit.load`` does not need them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["start_s", "latency_ms", "queue_ms", "status", "error", "ok"]
PERCENTILES = {"p50_ms": 0.50, "p90_ms": 0.90, "p99_ms": 0.99, "p99.9_ms": 0.999}


def run_frame(rows: Iterable[tuple]) -> pd.DataFrame:
    """A run's table from (start_s, latency_ms, queue_ms, status, error) rows, by start."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=COLUMNS[:-1])
    frame["status"] = frame["status"].astype(int)
    frame["error"] = frame["error"].astype(object)
    frame["ok"] = frame["error"].isna()
    return frame.sort_values("start_s", ignore_index=True)


def summary(run: pd.DataFrame) -> pd.Series:
    """Requests, success rate, throughput and latency percentiles of one run.

    Percentiles are exact (each is a latency some request really had) and cover every
    request, failed ones included: a fast error is not a good response time.
    Throughput counts successful responses per second of the run.
    """
    import numpy as np
    import pandas as pd

    latency = run["latency_ms"].to_numpy()
    if latency.size == 0:
        raise ValueError("this run has no requests to summarize: was the duration too short?")
    seconds = span_s(run)
    values = {
        "requests": int(latency.size),
        "success_rate": float(run["ok"].mean()),
        "throughput_rps": float(run["ok"].sum() / seconds) if seconds > 0 else float("nan"),
        "mean_ms": float(latency.mean()),
        **{
            name: float(np.quantile(latency, q, method="inverted_cdf"))
            for name, q in PERCENTILES.items()
        },
        "max_ms": float(latency.max()),
    }
    return pd.Series(values, name=run.attrs.get("label"))


def span_s(run: pd.DataFrame) -> float:
    """From the first request's start to the last response."""
    return float((run["start_s"] + run["latency_ms"] / 1000).max() - run["start_s"].min())


def compare(**runs: pd.DataFrame) -> pd.DataFrame:
    """One summary row per named run: ``compare(closed=a, open=b)``."""
    import pandas as pd

    return pd.DataFrame({name: summary(run) for name, run in runs.items()}).T


def timeline(run: pd.DataFrame, bucket_s: float = 1.0) -> pd.DataFrame:
    """Per time bucket: throughput and errors (by when responses came back), and latency
    percentiles (by when requests were due — a stall is charged to the requests it hit)."""
    import numpy as np
    import pandas as pd

    done_at = ((run["start_s"] + run["latency_ms"] / 1000) // bucket_s) * bucket_s
    due_at = (run["start_s"] // bucket_s) * bucket_s
    counts = run.groupby(done_at)["ok"].agg(ok="sum", all="count")
    latency = run.groupby(due_at)["latency_ms"]
    # Every bucket gets a row, so a stall shows as zero throughput rather than a gap.
    buckets = np.arange(0.0, float(done_at.max()) + bucket_s / 2, bucket_s)
    frame = pd.DataFrame({
        "rps": counts["ok"] / bucket_s,
        "error_rps": (counts["all"] - counts["ok"]) / bucket_s,
        "p50_ms": latency.quantile(0.5),
        "p99_ms": latency.quantile(0.99),
        "max_ms": latency.max(),
    }).reindex(buckets, method="nearest", tolerance=bucket_s / 1000)
    frame = frame.fillna({"rps": 0.0, "error_rps": 0.0})
    frame.index.name = "t_s"
    return frame
