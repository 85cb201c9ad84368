"""The guide's batch workload on the endpoint that is up: 273 passages, who wrote each, then indoors or
outdoors.

    python examples/classify_passages.py            # all thirteen books
    python examples/classify_passages.py Poe Wilde  # a smaller run

Same as `sandserve classify`, minus the report files.
"""

import asyncio
import sys

import sandserve
from sandserve.workloads.classify import classify, summary_lines
from sandserve.workloads.corpus import load_passages, select_books

endpoint = sandserve.client.connect()
passages = load_passages(select_books(sys.argv[1:] or None))
print(f"classifying {len(passages)} passages on {endpoint.model} ...")
report = asyncio.run(classify(endpoint, passages))
print("\n".join(summary_lines(report)))
