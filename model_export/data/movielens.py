"""MovieLens ratings as implicit-feedback sequences: ``ratings.csv`` (ml-latest, ml-25m, ...) or
the ML-100k ``u.data``, with genres (a multi-valued ``genre`` feature) and titles from
``movies.csv`` / ``u.item`` when they lie beside the ratings.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path

from model_export.data.assemble import (
    MAX_EXAMPLES,
    BadLines,
    LoadResult,
    assemble,
    feature_matrix,
    numbered_lines,
    ordered_ids,
)
from model_export.exceptions import DataFormatError

logger = logging.getLogger(__name__)

RATINGS_CSV = "ratings.csv"
MOVIES_CSV = "movies.csv"
U_DATA = "u.data"
U_ITEM = "u.item"
RATINGS_HEADER = ["userId", "movieId", "rating", "timestamp"]
MOVIES_HEADER = ["movieId", "title", "genres"]
NO_GENRES = "(no genres listed)"
# The 19 genre flags of u.item, in column order (ML-100k README / u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
U_ITEM_FIELDS = 5 + len(ML100K_GENRES)


def read_movielens(
    path: str | Path,
    *,
    min_rating: float | None = None,
    skip_bad: bool = False,
    name: str | None = None,
) -> LoadResult:
    """Load MovieLens ratings from a directory (``ratings.csv`` or ``u.data``) or a ratings file.

    Every rating is one behaviour (``min_rating`` keeps only ratings >= it). Items are the rated
    movies (numeric id order); timestamps become epoch ms; same-second ratings keep file order.
    Malformed lines raise :class:`DataFormatError` naming file and line, or are counted and
    skipped with ``skip_bad=True``.
    """
    ratings_path, movies_path = _locate(Path(path))
    bad = BadLines(skip_bad)
    counts: dict[str, int] = {}
    if ratings_path.name.endswith(".csv"):
        users, items, times, ratings, rows = _read_ratings_csv(ratings_path, bad)
    else:
        users, items, times, ratings, rows = _read_u_data(ratings_path, bad)
    bad.log_summary(ratings_path)
    if min_rating is not None:
        keep = [i for i, r in enumerate(ratings) if r >= min_rating]
        counts["ratings below min_rating"] = len(ratings) - len(keep)
        users = [users[i] for i in keep]
        items = [items[i] for i in keep]
        times = [times[i] for i in keep]

    item_ids = ordered_ids(items)
    name = name or ratings_path.parent.name or "movielens"
    if movies_path is None:
        logger.info("no movie file beside %s: loading without genres and titles", ratings_path)
        interactions = assemble(name, users, items, times, item_ids=item_ids)
        return LoadResult(
            interactions, "movielens", str(ratings_path), rows, bad.count, bad.examples, counts
        )

    movie_bad = BadLines(skip_bad)
    if movies_path.name.endswith(".csv"):
        titles, genres = _read_movies_csv(movies_path, movie_bad)
        vocabulary = None
    else:
        titles, genres = _read_u_item(movies_path, movie_bad)
        vocabulary = list(ML100K_GENRES)
    movie_bad.log_summary(movies_path)
    missing = sum(1 for item in item_ids if item not in titles)
    if missing:
        counts["rated movies missing from the movie file"] = missing
        logger.warning("rated movies missing from %s: %d", movies_path, missing)
    matrix, vocab, _ = feature_matrix(item_ids, genres, vocabulary=vocabulary)
    interactions = assemble(
        name,
        users,
        items,
        times,
        item_ids=item_ids,
        item_features={"genre": matrix},
        feature_sizes={"genre": len(vocab) + 1},
        item_labels=[titles.get(item, f"movie {item}") for item in item_ids],
    )
    return LoadResult(
        interactions,
        "movielens",
        str(ratings_path),
        rows,
        bad.count + movie_bad.count,
        (bad.examples + movie_bad.examples)[:MAX_EXAMPLES],
        counts,
        {"genre": vocab},
    )


def _locate(path: Path) -> tuple[Path, Path | None]:
    """(ratings file, movie file or None) for a MovieLens directory or ratings file."""
    if path.is_dir():
        for ratings, movies in ((RATINGS_CSV, MOVIES_CSV), (U_DATA, U_ITEM)):
            if (path / ratings).is_file():
                movie_path = path / movies
                return path / ratings, movie_path if movie_path.is_file() else None
        raise DataFormatError(f"{path}: expected a MovieLens folder with {RATINGS_CSV} or {U_DATA}")
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file or directory")
    movie_path = path.parent / (MOVIES_CSV if path.name.endswith(".csv") else U_ITEM)
    return path, movie_path if movie_path.is_file() else None


Columns = tuple[list[str], list[str], list[int], list[float], int]


def _read_ratings_csv(path: Path, bad: BadLines) -> Columns:
    with path.open(encoding="utf-8", newline="") as handle:
        header = handle.readline().rstrip("\r\n")
        if header.split(",") != RATINGS_HEADER:
            raise DataFormatError(
                f"{path}:1: expected the header {','.join(RATINGS_HEADER)!r}, got {header!r}"
            )
        return _read_rating_lines(
            path,
            handle,
            bad,
            first_line=2,
            sep=",",
            expected="userId,movieId,rating,timestamp (ints, float, int)",
        )


def _read_u_data(path: Path, bad: BadLines) -> Columns:
    with path.open(encoding="utf-8", newline="") as handle:
        return _read_rating_lines(
            path,
            handle,
            bad,
            first_line=1,
            sep="\t",
            expected="user<TAB>item<TAB>rating<TAB>timestamp, all numeric",
        )


def _read_rating_lines(
    path: Path, lines: Iterable[str], bad: BadLines, *, first_line: int, sep: str, expected: str
) -> Columns:
    """Columns of ``user, item, rating, timestamp`` lines (ratings.csv and u.data share them)."""
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    ratings: list[float] = []
    rows = 0
    for line_no, line in numbered_lines(lines, first_line):
        rows += 1
        fields = line.split(sep)
        parsed = _rating(fields) if len(fields) == 4 else None
        if parsed is None:
            bad.reject(path, line_no, expected, line)
            continue
        users.append(fields[0])
        items.append(fields[1])
        ratings.append(parsed[0])
        times.append(parsed[1] * 1000)
    return users, items, times, ratings, rows


def _rating(fields: list[str]) -> tuple[float, int] | None:
    """(rating, timestamp in s) from user, item, rating, timestamp fields, or None if malformed."""
    user, item, rating, timestamp = fields
    if not (user.isdigit() and item.isdigit() and timestamp.isdigit()):
        return None
    try:
        return float(rating), int(timestamp)
    except ValueError:
        return None


def _read_movies_csv(path: Path, bad: BadLines) -> tuple[dict[str, str], dict[str, list[str]]]:
    titles: dict[str, str] = {}
    genres: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header != MOVIES_HEADER:
                raise DataFormatError(
                    f"{path}:1: expected the header {','.join(MOVIES_HEADER)!r}, got {header}"
                )
            for row in reader:
                if not row:
                    continue
                if len(row) != 3 or not row[0].isdigit():
                    bad.reject(path, reader.line_num, "movieId,title,genres", ",".join(row))
                    continue
                movie, title, genre_field = row
                titles[movie] = title
                genres[movie] = [g for g in genre_field.split("|") if g and g != NO_GENRES]
        except csv.Error as exc:
            raise DataFormatError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    return titles, genres


def _read_u_item(path: Path, bad: BadLines) -> tuple[dict[str, str], dict[str, list[str]]]:
    titles: dict[str, str] = {}
    genres: dict[str, list[str]] = {}
    # u.item is latin-1 (titles such as "Misérables, Les").
    with path.open(encoding="latin-1", newline="") as handle:
        for line_no, line in numbered_lines(handle):
            fields = line.split("|")
            flags = fields[5:]
            if (
                len(fields) != U_ITEM_FIELDS
                or not fields[0].isdigit()
                or any(f not in ("0", "1") for f in flags)
            ):
                bad.reject(
                    path, line_no, f"{U_ITEM_FIELDS} '|'-separated fields ending in 0/1 flags", line
                )
                continue
            titles[fields[0]] = fields[1]
            genres[fields[0]] = [g for g, f in zip(ML100K_GENRES, flags, strict=True) if f == "1"]
    return titles, genres
