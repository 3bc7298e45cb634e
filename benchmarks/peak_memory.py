"""Peak resident memory of this process, for the benchmark workers.

``getrusage(...).ru_maxrss`` is not this process's own peak on Linux: exec keeps the larger of the
old and new address spaces' peaks, so a worker started by a parent holding 3.4 GB reports at least
3.4 GB (two workers of one bench_image.py run once printed the same 3.45 GB). ``VmHWM`` in
/proc/self/status belongs to the current address space only. Imported by the workers by path
(each runs in another environment), so it uses the standard library alone.
"""

import resource


def peak_rss_gb() -> float:
    """This address space's peak resident set in GiB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024 ** 2  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
