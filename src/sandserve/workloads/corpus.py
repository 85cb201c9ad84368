"""The guide's corpus: thirteen Project Gutenberg books, downloaded once and cached, sliced into passages.

Slicing follows the guide's script to the character: the body is what lies between "*** START" and
"*** END", a tenth is cut from each end, and each book gives ``count`` passages of 12,000 characters evenly
spaced from the start. Text is UTF-8 with LF newlines (Gutenberg serves CRLF; the published figures match LF).
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandserve.errors import ConfigError, SandserveError
from sandserve.paths import cache_dir

BOOKS: dict[str, int] = {
    "Austen": 1342,  # Pride and Prejudice
    "Bronte": 1260,  # Jane Eyre
    "Dickens": 98,  # A Tale of Two Cities
    "Doyle": 1661,  # The Adventures of Sherlock Holmes
    "Eliot": 145,  # Middlemarch
    "Hawthorne": 33,  # The Scarlet Letter
    "Melville": 2701,  # Moby Dick
    "Poe": 2148,  # The Works of Edgar Allan Poe, Vol. 2
    "Shelley": 84,  # Frankenstein
    "Stoker": 345,  # Dracula
    "Twain": 76,  # Adventures of Huckleberry Finn
    "Wells": 36,  # The War of the Worlds
    "Wilde": 174,  # The Picture of Dorian Gray
}
AUTHORS = sorted(BOOKS)
PASSAGES = 273
PASSAGES_PER_BOOK = PASSAGES // len(BOOKS)
PASSAGE_CHARS = 12_000
GUTENBERG_URL = "https://www.gutenberg.org/cache/epub/{id}/pg{id}.txt"
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Passage:
    author: str
    book_id: int
    index: int
    offset: int
    """Character offset in the trimmed body."""
    text: str

    @property
    def id(self) -> str:
        return f"{self.author}-{self.index:02d}"


class CorpusError(SandserveError):
    pass


def select_books(names_or_ids: list[str] | None) -> dict[str, int]:
    """The books named by author or Gutenberg id (all thirteen when None)."""
    if not names_or_ids:
        return dict(BOOKS)
    by_key = {author.lower(): author for author in BOOKS} | {
        str(book): author for author, book in BOOKS.items()
    }
    chosen: dict[str, int] = {}
    for key in names_or_ids:
        author = by_key.get(key.strip().lower())
        if author is None:
            raise ConfigError(
                f"Unknown book {key!r}.",
                hint="Name books by author or Gutenberg id: "
                + ", ".join(f"{a} ({b})" for a, b in BOOKS.items())
                + ".",
            )
        chosen[author] = BOOKS[author]
    return chosen


def normalise(raw: bytes) -> str:
    """UTF-8 (a BOM dropped) with LF newlines."""
    return raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")


def book_body(text: str) -> str:
    """The part between the Gutenberg START and END markers, a tenth cut from each end (as the guide does)."""
    if "*** START" not in text or "*** END" not in text:
        raise CorpusError(
            "The book has no '*** START' / '*** END' markers: it is not a Project Gutenberg text.",
            hint="Use the plain-text (pg<ID>.txt) edition of the book.",
        )
    body = text.split("*** START")[1].split("*** END")[0]
    # -len // 10 rounds away from zero: the guide's end trim is ceil(len / 10), kept for identical passages.
    return body[len(body) // 10 : -len(body) // 10]


def slice_passages(
    author: str, book_id: int, body: str, count: int, length: int = PASSAGE_CHARS
) -> list[Passage]:
    """``count`` passages of ``length`` characters, evenly spaced by offset (they may cut mid-word)."""
    if len(body) < length + count:
        raise CorpusError(
            f"{author}'s book (pg{book_id}) is too short for {count} passages of {length:,} characters.",
            hint="Ask for fewer passages per book (--per-book) or check the file.",
        )
    step = (len(body) - length) // count
    return [Passage(author, book_id, i, i * step, body[i * step : i * step + length]) for i in range(count)]


ProgressCallback = Callable[[str, int, int | None], None]
"""(file name, bytes so far, total bytes or None)"""


def load_book(
    book_id: int, *, corpus_dir: Path | None = None, on_progress: ProgressCallback | None = None
) -> str:
    """A book's text: from ``corpus_dir`` when it holds pg<ID>.txt, else the cache, else downloaded."""
    name = f"pg{book_id}.txt"
    if corpus_dir is not None:
        local = corpus_dir / name
        if local.is_file():
            return _read(local)
    cached = cache_dir() / "gutenberg" / name
    if not cached.is_file():
        _download(GUTENBERG_URL.format(id=book_id), cached, on_progress)
    return _read(cached)


def check_corpus_dir(corpus_dir: Path) -> None:
    """A --corpus-dir that is not a folder is a typo, not a reason to download: say so."""
    if not corpus_dir.exists():
        raise ConfigError(
            f"The corpus folder {corpus_dir} does not exist.",
            hint="Check the path (it should hold pg<ID>.txt files), or leave --corpus-dir out to download "
            "the books once into the cache.",
        )
    if not corpus_dir.is_dir():
        raise ConfigError(
            f"The corpus folder {corpus_dir} is not a folder.", hint="Pass the folder that holds it."
        )


def load_passages(
    books: dict[str, int],
    per_book: int = PASSAGES_PER_BOOK,
    *,
    corpus_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[Passage]:
    if corpus_dir is not None:
        check_corpus_dir(corpus_dir)
    passages: list[Passage] = []
    for author, book_id in books.items():
        body = book_body(load_book(book_id, corpus_dir=corpus_dir, on_progress=on_progress))
        passages += slice_passages(author, book_id, body, per_book)
    return passages


def _read(path: Path) -> str:
    try:
        return normalise(path.read_bytes())
    except OSError as exc:
        raise CorpusError(
            f"Cannot read {path}: {exc.strerror or exc}.", hint="Check the file's permissions."
        ) from exc
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path} is not UTF-8 text.", hint="Use the UTF-8 plain-text edition.") from exc


def _download(url: str, destination: Path, on_progress: ProgressCallback | None) -> None:
    """Download to a temporary file beside ``destination``, then move it in: never a half file in the
    cache."""
    import httpx

    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=destination.parent, prefix=destination.name, suffix=".part")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            httpx.stream("GET", url, timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=True) as response,
        ):
            response.raise_for_status()
            total = int(response.headers["content-length"]) if "content-length" in response.headers else None
            for chunk in response.iter_bytes():
                out.write(chunk)
                if on_progress:
                    on_progress(destination.name, response.num_bytes_downloaded, total)
        os.replace(temporary, destination)
    except httpx.HTTPError as exc:
        raise CorpusError(
            f"Could not download {url}: {exc}.",
            hint=f"Check your connection, or put the file in a folder as {destination.name} and pass "
            "--corpus-dir FOLDER.",
        ) from exc
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


# --- offline books ---------------------------------------------------------------------------------------

#: The words of the offline books: text of the right shape and length, with no author's signal in it.
SYNTHETIC_WORDS = (
    "the",
    "a",
    "whale",
    "ship",
    "sea",
    "house",
    "room",
    "door",
    "night",
    "light",
    "man",
    "woman",
    "said",
    "and",
    "of",
    "to",
    "in",
    "garden",
)


def synthetic_book(seed: int, words: int = 25_000, newline: str = "\n") -> str:
    """A book laid out as Project Gutenberg lays one out (header, START and END markers, licence), made of
    random words: for a machine with no network, where timing and caching matter and accuracy does not."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(SYNTHETIC_WORDS) for _ in range(12)) for _ in range(words // 12)]
    text = "\n".join(
        [
            "The Project Gutenberg eBook of a synthetic book",
            "",
            f"*** START OF THE PROJECT GUTENBERG EBOOK {seed} ***",
            *lines,
            f"*** END OF THE PROJECT GUTENBERG EBOOK {seed} ***",
            "license text",
        ]
    )
    return text.replace("\n", newline)


def write_synthetic_corpus(folder: Path, authors: list[str] | None = None, newline: str = "\n") -> Path:
    """``folder`` filled with one synthetic book per author (default: all thirteen), named as
    ``--corpus-dir`` expects them (``pg<ID>.txt``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, author in enumerate(authors or AUTHORS):
        (folder / f"pg{BOOKS[author]}.txt").write_bytes(synthetic_book(seed, newline=newline).encode())
    return folder
