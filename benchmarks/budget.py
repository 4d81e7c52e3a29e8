"""Time budget and progress/ETA for the benchmark suite (suite.py).

The suite must finish in a fixed wall-clock time (8 minutes on one H100), but no one can predict
exactly how long each GPU measurement or FlexAttention compilation takes. So every part gets a
budget in seconds, and a part only *starts* a unit of work (one config, one compilation) while its
budget allows; what it could not start is recorded as skipped, never silently dropped.

Budgets roll forward: time a part did not use is added to the next part's. A part may never eat
into the time reserved for the parts after it (half of their nominal budgets), so a slow early
part cannot starve the later ones completely.
"""
import time

from results_io import log


class SuiteClock:
    """The whole run: a hard end time (no new work after it) and the ordered list of parts."""

    def __init__(self, total_s, parts, start=None):
        """parts: list of (name, nominal budget in seconds), in the order they will run; start: a
        time.monotonic() value the total counts from (default now)."""
        self.start = time.monotonic() if start is None else start
        self.total_s = total_s
        self.parts = list(parts)
        nominal = sum(b for _, b in self.parts) or 1.0
        # Nominal budgets are scaled so they add up to the total (a --max-minutes change scales all).
        self.scale = total_s / nominal
        self.carry_s = 0.0

    def elapsed(self):
        return time.monotonic() - self.start

    def remaining(self):
        return self.total_s - self.elapsed()

    def begin(self, name):
        """Start part `name`; returns its PartBudget."""
        names = [n for n, _ in self.parts]
        index = names.index(name)
        budget = self.parts[index][1] * self.scale + self.carry_s
        reserve_later = 0.5 * self.scale * sum(b for _, b in self.parts[index + 1:])
        budget = max(0.0, min(budget, self.remaining() - reserve_later))
        log(f"[suite] part {index + 1}/{len(self.parts)} '{name}': budget {budget:.0f} s "
            f"(elapsed {self.elapsed():.0f} s of {self.total_s:.0f} s)")
        return PartBudget(self, name, budget)

    def end(self, part):
        used = part.elapsed()
        self.carry_s = max(0.0, part.budget_s - used)
        log(f"[suite] part '{part.name}' done in {used:.0f} s (budget {part.budget_s:.0f} s); "
            f"elapsed {self.elapsed():.0f} s")


class PartBudget:
    """One part's budget, plus a weighted progress counter for the ETA lines."""

    def __init__(self, clock, name, budget_s):
        self.clock = clock
        self.name = name
        self.budget_s = budget_s
        self.start = time.monotonic()
        self.total_weight = 0.0
        self.done_weight = 0.0
        self.skipped_units = 0

    def elapsed(self):
        return time.monotonic() - self.start

    def remaining(self):
        return min(self.budget_s - self.elapsed(), self.clock.remaining())

    def allows(self, predicted_s=0.0):
        """May a unit of work predicted to take `predicted_s` seconds start now?"""
        return self.remaining() > predicted_s

    def plan(self, total_weight):
        """Declare the part's total work (any unit: estimated seconds, FLOPs, ...)."""
        self.total_weight = max(total_weight, 1e-9)

    def advance(self, weight, label=""):
        """Count `weight` of work as done and log progress with an ETA for this part."""
        self.done_weight += weight
        frac = min(1.0, self.done_weight / self.total_weight) if self.total_weight else 1.0
        elapsed = self.elapsed()
        if frac > 0:
            eta = elapsed * (1 - frac) / frac
            eta_text = f"ETA {min(eta, max(0.0, self.remaining())):.0f} s" \
                if eta <= self.remaining() else f"ETA {eta:.0f} s > budget left {self.remaining():.0f} s"
        else:
            eta_text = "ETA ?"
        log(f"[{self.name} {100 * frac:5.1f}% {elapsed:5.0f} s, {eta_text}, "
            f"suite {self.clock.elapsed():.0f}/{self.clock.total_s:.0f} s] {label}")
