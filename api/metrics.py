"""Prometheus metrics of the service (`GET /metrics`, text format): its HTTP traffic, and its jobs as gauges and
counters read on each scrape (so they are right even for jobs run by another API process or by hand).

    stepwise_http_requests_total{method,route,status}        requests answered, by route template
    stepwise_http_request_duration_seconds{method,route}     histogram of the time to answer
    stepwise_jobs{status}                                    jobs by status
    stepwise_job_info{job_id,status,task,teacher_backend,teacher_model}   always 1: the labels are the data
    stepwise_job_progress_ratio{job_id}                      0..1
    stepwise_job_records_total{job_id,outcome}               accepted / rejected records
    stepwise_job_rejects_total{job_id,reason}                rejected records by reason
    stepwise_job_tokens_total{job_id,direction}              teacher tokens in / out
    stepwise_job_cost_usd_total{job_id}                      priced teacher spend
    stepwise_job_teacher_accuracy_ratio{job_id}              correct / records with gold
    stepwise_job_requests_per_second{job_id}                 running jobs, over the last 30 s
    stepwise_job_eta_seconds{job_id}                         running jobs
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from stepwise.api.schemas import JobView
from stepwise.pipeline.types import JobStatus
from stepwise.pipeline.service import JobService

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATUSES = tuple(JobStatus)


class JobsCollector(Collector):
    """Reads every job of the service at scrape time."""

    def __init__(self, service: JobService):
        self.service = service

    def collect(self):
        views = [JobView.of(v) for v in self.service.list()]
        by_status = GaugeMetricFamily("stepwise_jobs", "Jobs by status.", labels=["status"])
        for status in _STATUSES:
            by_status.add_metric([status], sum(1 for v in views if v.status == status))
        yield by_status

        info = GaugeMetricFamily("stepwise_job_info", "One series per job; its labels describe it.",
                                 labels=["job_id", "status", "task", "teacher_backend", "teacher_model"])
        progress = GaugeMetricFamily("stepwise_job_progress_ratio", "Share of the job done, 0..1.",
                                     labels=["job_id"])
        records = CounterMetricFamily("stepwise_job_records", "Records written, accepted or rejected.",
                                      labels=["job_id", "outcome"])
        rejects = CounterMetricFamily("stepwise_job_rejects", "Rejected records by reason.",
                                      labels=["job_id", "reason"])
        tokens = CounterMetricFamily("stepwise_job_tokens", "Teacher tokens.", labels=["job_id", "direction"])
        cost = CounterMetricFamily("stepwise_job_cost_usd", "Priced teacher spend in US dollars.",
                                   labels=["job_id"])
        accuracy = GaugeMetricFamily("stepwise_job_teacher_accuracy_ratio",
                                     "Correct records over records with a gold label.", labels=["job_id"])
        rate = GaugeMetricFamily("stepwise_job_requests_per_second",
                                 "Teacher requests per second over the last 30 s (running jobs).", labels=["job_id"])
        eta = GaugeMetricFamily("stepwise_job_eta_seconds", "Seconds left at the current rate (running jobs).",
                                labels=["job_id"])
        for v in views:
            info.add_metric([v.job_id, v.status, v.task or "", v.teacher_backend or "", v.teacher_model or ""], 1)
            progress.add_metric([v.job_id], v.progress)
            records.add_metric([v.job_id, "accepted"], v.n_accepted)
            records.add_metric([v.job_id, "rejected"], v.n_rejected)
            for reason, n in v.reject_reasons.items():
                rejects.add_metric([v.job_id, reason], n)
            tokens.add_metric([v.job_id, "in"], v.tokens_in)
            tokens.add_metric([v.job_id, "out"], v.tokens_out)
            cost.add_metric([v.job_id], v.cost_usd)
            if v.teacher_accuracy is not None:
                accuracy.add_metric([v.job_id], v.teacher_accuracy)
            if v.status == JobStatus.RUNNING and v.run is not None and v.run.requests_per_s is not None:
                rate.add_metric([v.job_id], v.run.requests_per_s)
            if v.eta_s is not None:
                eta.add_metric([v.job_id], v.eta_s)
        yield from (info, progress, records, rejects, tokens, cost, accuracy, rate, eta)


class ServiceMetrics:
    """The service's own registry (not the process-global one, so two apps in one process never clash)."""

    def __init__(self, service: JobService):
        disable_created_metrics()  # no `_created` twin of every counter series (process-wide, and harmless)
        self.registry = CollectorRegistry(auto_describe=False)  # no job scan at start
        self.requests = Counter("stepwise_http_requests", "HTTP requests answered.", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("stepwise_http_request_duration_seconds", "Time to answer an HTTP request.",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.registry.register(JobsCollector(service))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


class MetricsMiddleware:
    """Plain ASGI middleware: counts each HTTP request under its route template (`/v1/jobs/{job_id}`, never the
    raw path, so job ids do not multiply the series); paths no route matched count as `unmatched`."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            self.metrics.observe(scope["method"], getattr(route, "path", "unmatched"), status,
                                 time.perf_counter() - start)
