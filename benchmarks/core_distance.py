"""How far apart two of this machine's CPUs are right now: the round trip of a cache line
between two threads, in ns.

On the 2-vCPU VM the benchmarks were tuned on it reads ~50 ns or ~300 ns, flipping every few
seconds (the two vCPUs near each other, or far apart), and two-thread code runs at full speed
or loses up to half in step with it (W2's step: ~141 vs ~215 us). run.py prints it before and
after every measurement, so a reader can tell which rounds ran in which state.

    python benchmarks/core_distance.py      # one reading
"""
from __future__ import annotations

import atexit
import functools
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

# Two threads hand a counter back and forth through one cache line; the best of 3 sets of
# 5,000 round trips, so one preemption does not count (a reading takes ~20 ms, mostly the
# process start).
SOURCE = r"""
#include <stdio.h>
#include <time.h>
#include <omp.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static _Alignas(64) volatile int turn;
int main(void)
{
    const int rounds = 5000;
    double best = 1e9;
    for (int set = 0; set < 3; set++) {
        double start = 0.0;
        turn = 0;
#pragma omp parallel num_threads(2)
        {
            const int me = omp_get_thread_num();
#pragma omp barrier
            if (me == 0)
                start = now();
            for (int i = 0; i < rounds; i++) {
                while (turn != 2 * i + me)
                    ;
                turn = 2 * i + me + 1;
            }
#pragma omp barrier
            if (me == 0 && (now() - start) / rounds < best)
                best = (now() - start) / rounds;
        }
    }
    printf("%.1f\n", best * 1e9);
    return 0;
}
"""


@functools.lru_cache(maxsize=None)
def _probe() -> str | None:
    """The probe program, built once per process (None: no compiler, or one CPU)."""
    if (os.cpu_count() or 1) < 2:
        return None
    directory = Path(tempfile.mkdtemp(prefix="nncc-core-distance-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    (directory / "probe.c").write_text(SOURCE)
    cc = shlex.split(os.environ.get("CC", "cc"))
    built = subprocess.run([*cc, "-O2", "-fopenmp", "probe.c", "-o", "probe"], cwd=directory, capture_output=True)
    return str(directory / "probe") if built.returncode == 0 else None


def round_trip_ns() -> float | None:
    """One reading, in ns (None where it cannot be measured)."""
    probe = _probe()
    if probe is None:
        return None
    try:
        out = subprocess.run([probe], capture_output=True, text=True, timeout=10, env={**os.environ,
                                                                                       "OMP_PROC_BIND": "false"})
        return float(out.stdout.strip())
    except (subprocess.TimeoutExpired, ValueError):
        return None


if __name__ == "__main__":
    reading = round_trip_ns()
    print("cannot measure here" if reading is None else f"{reading:.0f} ns")
