"""Both sandboxes as child processes, and what the benchmarks ask of them.

Call counts come from each sandbox's ``GET /_sandbox/stats`` (every API request it
answered, by method, path template and status); admin requests are not counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.common import ROOT


class Sandbox:
    """One sandbox process (``python -m bench._sandbox``)."""

    def __init__(
        self, kind: str, seed: Path | None, *, rate_limit: int = 0, block_seconds: float = 60.0
    ) -> None:
        self.kind = kind
        cmd = [sys.executable, "-m", "bench._sandbox", kind, "--rate-limit", str(rate_limit)]
        cmd += ["--block-seconds", str(block_seconds)]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"{kind} sandbox did not start (said {line!r})")
        self.url = line.split(" ", 1)[1].rstrip("/")
        self._lock = threading.Lock()

    # -- control channel -------------------------------------------------------------
    def command(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
            answer = json.loads(self.proc.stdout.readline())
        if not answer.get("ok"):
            raise RuntimeError(f"{self.kind} sandbox: {answer}")
        return dict(answer)

    def shift(self, seconds: float) -> None:
        """Every record's timestamps move ``seconds`` into the past (time passes)."""
        self.command(cmd="shift", seconds=seconds)

    def count(self, resource: str) -> int:
        return int(self.command(cmd="count", resource=resource)["count"])

    # -- admin HTTP ------------------------------------------------------------------
    def admin(self, method: str, path: str, body: Any = None) -> Any:
        # A new connection per call: the rate sampler's thread calls this concurrently.
        r = requests.request(method, f"{self.url}/_sandbox/{path}", json=body, timeout=120)
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict[str, Any]:
        return dict(self.admin("GET", "stats"))

    def reset_stats(self) -> None:
        self.admin("POST", "stats/reset")

    def faults(self, **settings: Any) -> None:
        self.admin("POST", "faults", settings)

    def config(self, **settings: Any) -> None:
        self.admin("POST", "config", settings)

    def total(self) -> int:
        return int(self.stats()["total"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@dataclass
class Pair:
    """The Chargebee and Customcrm sandboxes of one benchmark."""

    cb: Sandbox
    crm: Sandbox

    def stop(self) -> None:
        self.cb.stop()
        self.crm.stop()

    def reset_stats(self) -> None:
        self.cb.reset_stats()
        self.crm.reset_stats()

    def shift(self, seconds: float) -> None:
        self.cb.shift(seconds)
        self.crm.shift(seconds)

    def __enter__(self) -> Pair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_pair(
    cb_seed: Path | None, crm_seed: Path | None, *, cb_rate_limit: int = 0, block_seconds: float = 60.0
) -> Pair:
    cb = Sandbox("chargebee", cb_seed, rate_limit=cb_rate_limit, block_seconds=block_seconds)
    try:
        crm = Sandbox("customcrm", crm_seed)
    except Exception:
        cb.stop()
        raise
    return Pair(cb, crm)


@dataclass
class CallCounts:
    """Requests one sandbox answered, by ``"METHOD template"`` and status."""

    by_endpoint: dict[str, Counter[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, stats: dict[str, Any]) -> CallCounts:
        out: dict[str, Counter[str]] = {}
        for r in stats["requests"]:
            out.setdefault(f"{r['method']} {r['path']}", Counter())[str(r["status"])] += int(r["count"])
        return cls(out)

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.by_endpoint.values())

    def status(self, code: str) -> int:
        return sum(c.get(code, 0) for c in self.by_endpoint.values())

    def kinds(self) -> Counter[str]:
        """Calls by kind: ``list`` (GET on a collection), ``read`` (GET one), ``write:<endpoint>``."""
        out: Counter[str] = Counter()
        for key, counts in self.by_endpoint.items():
            method, template = key.split(" ", 1)
            n = sum(counts.values())
            if method == "GET":
                out["read" if "{" in template else "list"] += n
            else:
                out[f"write {method} {_short(template)}"] += n
        return out

    def writes(self) -> int:
        return sum(n for k, n in self.kinds().items() if k.startswith("write"))


def _short(template: str) -> str:
    return template.removeprefix("/api/v2")


class RateSampler:
    """Polls a sandbox's request total every ``interval`` s: (monotonic time, total, 429s)."""

    def __init__(self, sandbox: Sandbox, interval: float = 0.5) -> None:
        self.sandbox = sandbox
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                s = self.sandbox.stats()
                self.samples.append((time.monotonic(), int(s["total"]), int(s["by_status"].get("429", 0))))
            except requests.RequestException:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> RateSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_window(self, seconds: float = 60.0) -> int:
        """Most requests seen in any window of ``seconds`` (to the sampling interval)."""
        best = 0
        j = 0
        for t, total, _ in self.samples:
            while self.samples[j][0] < t - seconds:
                j += 1
            base = self.samples[j - 1][1] if j > 0 else self.samples[0][1]
            best = max(best, total - base)
        return best
