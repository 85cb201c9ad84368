"""A fleet gateway's metrics as sglang-router 0.3.2 (smg) exposes them (text captured from a real one)."""

from __future__ import annotations

from sandserve.observe.gateway_view import parse_gateway_metrics

SMG_METRICS = """\
# TYPE smg_router_requests_total counter
smg_router_requests_total{router_type="http",backend_type="regular",connection_mode="http",model="tiny",endpoint="chat",streaming="false"} 3
smg_router_requests_total{router_type="http",backend_type="regular",connection_mode="http",model="tiny",endpoint="completions",streaming="false"} 1
smg_http_responses_total{status_code="202",error_code=""} 2
smg_http_responses_total{status_code="200",error_code=""} 9
smg_http_responses_total{status_code="503",error_code="no_healthy_worker"} 4
smg_http_responses_total{status_code="404",error_code="model_not_found"} 1
smg_worker_pool_size{worker_type="regular",connection_mode="http",model="tiny"} 2
smg_worker_requests_active{worker="http://127.0.0.1:46259"} 3
smg_worker_health{worker="http://127.0.0.1:46259"} 1
smg_worker_health{worker="http://127.0.0.1:52011"} 0
"""  # noqa: E501 - the gateway's metrics text, verbatim


def test_requests_errors_and_each_workers_view():
    metrics = parse_gateway_metrics(SMG_METRICS)
    assert metrics.requests_total == 4
    assert metrics.error_responses == 5  # the 503s and the 404, not the 200s and 202s
    assert metrics.active_by_worker == {"http://127.0.0.1:46259": 3}
    assert metrics.healthy_by_worker == {"http://127.0.0.1:46259": True, "http://127.0.0.1:52011": False}


def test_a_gateway_without_these_metrics_gives_unknowns():
    metrics = parse_gateway_metrics("other_metric 1\n")
    assert metrics.requests_total is None and metrics.error_responses is None
    assert metrics.active_by_worker == {} and metrics.healthy_by_worker == {}
