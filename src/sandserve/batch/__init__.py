"""Batch work: OpenAI batch files in and out, a bounded pool of requests in flight, nothing lost."""

from sandserve.batch.runner import (
    BatchProgress,
    BatchRequest,
    BatchResult,
    BatchSummary,
    default_concurrency,
    run_batch,
    run_batch_sync,
    run_requests,
    run_requests_sync,
    summary_path,
)

__all__ = [
    "BatchProgress",
    "BatchRequest",
    "BatchResult",
    "BatchSummary",
    "default_concurrency",
    "run_batch",
    "run_batch_sync",
    "run_requests",
    "run_requests_sync",
    "summary_path",
]
