"""Batch work: OpenAI batch files in and out, a bounded pool of requests in flight, nothing lost."""

from sandserve.batch.files import errors_path, summary_path
from sandserve.batch.runner import (
    default_concurrency,
    run_batch,
    run_batch_sync,
    run_requests,
    run_requests_sync,
)
from sandserve.batch.types import BatchProgress, BatchRequest, BatchResult, BatchSummary

__all__ = [
    "BatchProgress",
    "BatchRequest",
    "BatchResult",
    "BatchSummary",
    "default_concurrency",
    "errors_path",
    "run_batch",
    "run_batch_sync",
    "run_requests",
    "run_requests_sync",
    "summary_path",
]
