"""Which column of a data version's `live_benchmark_models.parquet` is its main benchmark.

Numerai names each version's benchmark models after the version (`v52_*` in v5.2's
files, `v53_*` in v5.3's) and its main target (example-scripts at the v5.3 release:
`v53_lgbm_ender20`, main target `target_ender_20`). So the default cannot be one
name for every version: a v5.3 file has no `v52_*` column at all.

The rule: `v<major><minor>_lgbm_<main target, without "target_" and underscores>`.
Only the versions a public source confirms are in the table; for another, or a file
without its main column, the first column with the version's prefix stands in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The one table of main benchmark columns, by data version, each from a public source:
# v5.3: example-scripts (numerai/agents/code/analysis/plot_benchmark_corrs.py, show_experiment.py);
# v5.2: the v5.2 benchmark column the app used from the start (read from v5.2 files).
MAIN_BENCHMARK = {
    "v5.2": "v52_lgbm_teager2b20",
    "v5.3": "v53_lgbm_ender20",
}


@dataclass(frozen=True)
class BenchmarkChoice:
    """The column to compare with (None: none fits), and what the report says about the choice."""

    column: str | None
    note: str | None = None  # a stand-in column was used: worth knowing, not a problem
    problem: str | None = None  # why no column fits


def version_prefix(data_version: str) -> str:
    """The prefix of a version's benchmark columns: v5.3 → "v53_", v5.2 → "v52_"."""
    return "v" + "".join(re.findall(r"\d+", data_version)[:2]) + "_"


def choose_column(columns: list[str], data_version: str, setting: str | None) -> BenchmarkChoice:
    """The benchmark column of `columns` for `data_version`, or BENCHMARK_MODEL when it is set.

    Unset, the version's main column (MAIN_BENCHMARK) is used; when the file lacks it (or the
    version is not in the table), the first column with the version's prefix stands in.
    """
    listed = ", ".join(c for c in columns if c != "id" and not c.startswith("__"))[:600]
    if setting:
        if setting in columns:
            return BenchmarkChoice(setting)
        return BenchmarkChoice(
            None,
            problem=(
                f"the round's live_benchmark_models.parquet has no column '{setting}' "
                f"(BENCHMARK_MODEL); it has: {listed}"
            ),
        )
    main = MAIN_BENCHMARK.get(data_version)
    if main in columns:
        return BenchmarkChoice(main)
    prefix = version_prefix(data_version)
    own = [c for c in columns if c.startswith(prefix)]
    if own:
        lacking = (
            f"has no '{main}'"
            if main
            else "is a version without a main benchmark in the app's table"
        )
        return BenchmarkChoice(
            own[0],
            note=(
                f"the benchmark check used '{own[0]}', the first {prefix}* column: {data_version}'s "
                f"live_benchmark_models.parquet {lacking} (set BENCHMARK_MODEL to choose another)"
            ),
        )
    return BenchmarkChoice(
        None,
        problem=(
            f"the round's {data_version} live_benchmark_models.parquet has no {prefix}* column to compare with "
            f"(set BENCHMARK_MODEL to one of its columns); it has: {listed}"
        ),
    )
