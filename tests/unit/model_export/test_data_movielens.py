"""MovieLens loader: the real latest-small files and small hand-written fixtures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from model_export.data import LoadResult, load
from model_export.data.movielens import read_movielens
from model_export.exceptions import DataFormatError


@pytest.fixture(scope="module")
def latest_small(movielens_dir: Path) -> LoadResult:
    return read_movielens(movielens_dir)


def test_latest_small_counts(latest_small: LoadResult, movielens_dir: Path) -> None:
    data = latest_small.interactions
    assert data.n_users == 610
    assert data.n_interactions == 100_836
    assert latest_small.rows == 100_836
    assert latest_small.bad_lines == 0
    # movies.csv lists 9,742 movies; only the 9,724 rated ones become items.
    with (movielens_dir / "movies.csv").open(newline="", encoding="utf-8") as f:
        assert sum(1 for _ in csv.reader(f)) - 1 == 9_742
    assert data.n_items == 9_724
    assert "rated movies missing from the movie file" not in latest_small.counts
    assert data.item_ids == sorted(data.item_ids, key=int)
    assert all(int(s.min()) >= 1 and int(s.max()) <= data.n_items for s in data.sequences)


def test_latest_small_genres_titles_and_quoting(latest_small: LoadResult) -> None:
    data = latest_small.interactions
    index = data.item_index()
    vocab = latest_small.feature_vocab["genre"]
    assert data.feature_sizes["genre"] == len(vocab) + 1 == 20  # 19 genres + none
    assert "(no genres listed)" not in vocab
    genres = data.item_features["genre"]
    assert genres.shape == (data.n_items + 1, 10) and genres.dtype == np.int64
    assert not genres[0].any()
    toy_story = index["1"]
    assert data.item_labels is not None
    assert data.item_labels[toy_story - 1] == "Toy Story (1995)"
    named = {vocab[g - 1] for g in genres[toy_story] if g}
    assert named == {"Adventure", "Animation", "Children", "Comedy", "Fantasy"}
    # movieId 11 is quoted in the CSV because its title holds a comma.
    assert data.item_labels[index["11"] - 1] == "American President, The (1995)"


def test_latest_small_order_matches_a_stable_sort_of_the_file(
    latest_small: LoadResult, movielens_dir: Path
) -> None:
    rows: dict[str, list[tuple[int, str]]] = {}
    with (movielens_dir / "ratings.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["userId"], []).append((int(row["timestamp"]), row["movieId"]))
    data = latest_small.interactions
    assert data.timestamps is not None
    ties = 0
    for u, user in enumerate(data.users):
        expected = sorted(rows[user], key=lambda r: r[0])  # stable: ties keep file order
        ties += len(expected) - len({t for t, _ in expected})
        assert [data.item_ids[i - 1] for i in data.sequences[u]] == [m for _, m in expected]
        assert data.timestamps[u].tolist() == [t * 1000 for t, _ in expected]
    assert ties > 1000  # the tie-breaking rule is really exercised


RATINGS = """userId,movieId,rating,timestamp
2,10,4.0,100
1,30,3.5,200
1,20,5.0,100
1,10,1.0,200
2,30,2.0,50
"""
MOVIES = """movieId,title,genres
10,"Hello, World (2001)",Comedy|Drama
20,Plain (1999),(no genres listed)
30,Third (2000),Drama
"""


def _write(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_text(text, encoding="utf-8")
    return folder


def test_fixture_ties_keep_file_order_and_times_are_ms(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ml", ratings_csv=RATINGS, movies_csv=MOVIES)
    data = read_movielens(folder).interactions
    assert data.users == ["1", "2"]
    assert data.item_ids == ["10", "20", "30"]
    assert data.timestamps is not None
    # user 1: (20 @100), then the tie at 200 in file order: 30, 10
    assert [data.item_ids[i - 1] for i in data.sequences[0]] == ["20", "30", "10"]
    assert data.timestamps[0].tolist() == [100_000, 200_000, 200_000]
    assert [data.item_ids[i - 1] for i in data.sequences[1]] == ["30", "10"]
    assert data.item_labels == ["Hello, World (2001)", "Plain (1999)", "Third (2000)"]
    genre = data.item_features["genre"]
    assert genre.tolist() == [[0, 0], [1, 2], [0, 0], [2, 0]]  # Comedy=1, Drama=2


def test_fixture_min_rating(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ml", ratings_csv=RATINGS)
    result = read_movielens(folder, min_rating=3.0)
    assert result.interactions.n_interactions == 3
    assert result.counts["ratings below min_rating"] == 2
    assert result.interactions.item_labels is None and not result.interactions.item_features


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    bad = RATINGS.replace("1,20,5.0,100", "1,20,five,100")
    folder = _write(tmp_path / "ml", ratings_csv=bad)
    with pytest.raises(DataFormatError, match=r"ratings\.csv:4: expected userId,movieId"):
        read_movielens(folder)
    result = read_movielens(folder, skip_bad=True)
    assert result.bad_lines == 1
    assert "ratings.csv:4" in result.bad_line_examples[0]
    assert result.interactions.n_interactions == 4


def test_wrong_field_count_and_header(tmp_path: Path) -> None:
    folder = _write(tmp_path / "a", ratings_csv=RATINGS + "3,10,4.0\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv:7"):
        read_movielens(folder)
    folder = _write(tmp_path / "b", ratings_csv="user,movie,rating,ts\n1,2,3,4\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv:1: expected the header"):
        read_movielens(folder, skip_bad=True)


def test_malformed_movie_line(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ml", ratings_csv=RATINGS, movies_csv=MOVIES + "x,Bad,Drama\n")
    with pytest.raises(DataFormatError, match=r"movies\.csv:5"):
        read_movielens(folder)
    result = read_movielens(folder, skip_bad=True)
    assert result.bad_lines == 1


U_ITEM_FLAGS = ["0"] * 19


def _u_item_line(movie: int, title: str, genres: list[int]) -> str:
    flags = list(U_ITEM_FLAGS)
    for g in genres:
        flags[g] = "1"
    return "|".join([str(movie), title, "01-Jan-1995", "", "http://x", *flags])


def test_ml100k_u_data_and_latin1_u_item(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("7\t2\t3\t881250949\n7\t1\t5\t881250949\n9\t2\t4\t5\n")
    items = [_u_item_line(1, "Misérables, Les (1995)", [8, 14]), _u_item_line(2, "X (1990)", [1])]
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    result = load(folder)
    data = result.interactions
    assert result.format == "movielens"
    assert data.users == ["7", "9"]
    assert [data.item_ids[i - 1] for i in data.sequences[0]] == ["2", "1"]  # tie: file order
    assert data.item_labels == ["Misérables, Les (1995)", "X (1990)"]
    vocab = result.feature_vocab["genre"]
    assert len(vocab) == 19 and data.feature_sizes["genre"] == 20
    assert {vocab[g - 1] for g in data.item_features["genre"][1] if g} == {"Drama", "Romance"}
    assert {vocab[g - 1] for g in data.item_features["genre"][2] if g} == {"Action"}


def test_u_data_malformed(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("7\t2\t3\t881250949\n7 1 5 881250949\n")
    with pytest.raises(DataFormatError, match=r"u\.data:2: expected user<TAB>item"):
        read_movielens(folder)
    assert read_movielens(folder, skip_bad=True).bad_lines == 1
