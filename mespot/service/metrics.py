"""Prometheus metrics for operators: jobs by state, frames extracted, slot (GPU) busy time,
and the HTTP requests served. Job numbers are read from the job store at each scrape, so they
survive restarts; request numbers count from the server's start."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mespot.service.config import ServiceConfig
from mespot.service.jobs import JobStore


class JobCollector:
    """Reads the job store when Prometheus scrapes."""

    def __init__(self, store: JobStore, config: ServiceConfig):
        self.store, self.config = store, config

    def collect(self):
        jobs = GaugeMetricFamily("mespot_jobs", "Jobs by state.", labels=["state"])
        for state, n in self.store.counts().items():
            jobs.add_metric([state], n)
        yield jobs
        totals = self.store.totals()
        yield CounterMetricFamily("mespot_frames_extracted", "Frames of videos extracted to "
                                  "completion into stores.", value=totals["frames"])
        devices = {s.name: s for s in self.config.slots}
        busy = CounterMetricFamily("mespot_slot_busy_seconds", "Seconds a slot ran a job.",
                                   labels=["slot", "device"])
        gpu = CounterMetricFamily("mespot_gpu_busy_seconds", "Seconds a GPU ran a job.",
                                  labels=["gpu"])
        for name, seconds in sorted(totals["busy_seconds"].items()):
            slot = devices.get(name)
            busy.add_metric([name, slot.device if slot else "unknown"], seconds or 0.0)
            if slot is not None and slot.gpu is not None:
                gpu.add_metric([str(slot.gpu)], seconds or 0.0)
        yield busy
        yield gpu
        slots = GaugeMetricFamily("mespot_slots", "Slots (one job at a time each).",
                                  labels=["device"])
        for device in sorted({s.device for s in self.config.slots}):
            slots.add_metric([device], sum(s.device == device for s in self.config.slots))
        yield slots


class Metrics:
    """The app's own registry (not the process-wide default, so tests can build several)."""

    def __init__(self, store: JobStore, config: ServiceConfig):
        self.registry = CollectorRegistry()
        self.registry.register(JobCollector(store, config))
        self.requests = Counter("mespot_http_requests", "HTTP requests served.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("mespot_http_request_seconds", "Time to answer a request.",
                                 ["route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                          0.5, 1.0, 2.5, 5.0))
