"""The guide's batch workload on the endpoint that is up: 273 passages, who wrote each, then indoors or
outdoors.

    python examples/classify_passages.py                 # all thirteen books
    python examples/classify_passages.py Poe Wilde       # a smaller run
    python examples/classify_passages.py --per-book 3 --corpus-dir books/ Poe   # local copies (pg<ID>.txt)

Same as `sandserve classify`, minus the report files.
"""

import argparse
import asyncio
from pathlib import Path

import sandserve
from sandserve.workloads.classify import classify, summary_lines
from sandserve.workloads.corpus import PASSAGES_PER_BOOK, load_passages, select_books

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("books", nargs="*", help="authors or Gutenberg ids (default: all thirteen)")
parser.add_argument("--per-book", type=int, default=PASSAGES_PER_BOOK, help="passages per book")
parser.add_argument("--corpus-dir", type=Path, help="a folder with local copies (else downloaded once)")
args = parser.parse_args()

endpoint = sandserve.connect()
passages = load_passages(select_books(args.books or None), args.per_book, corpus_dir=args.corpus_dir)
print(f"classifying {len(passages)} passages on {endpoint.model} ...")
report = asyncio.run(classify(endpoint, passages))
print("\n".join(summary_lines(report)))
