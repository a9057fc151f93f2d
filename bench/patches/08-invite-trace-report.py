"""Join the /tmp/duet-trace/*.jsonl lines of bench/patches/08-invite-trace.diff by call and print
p50/p90/p99 of each step of the invite's path, in milliseconds."""

import glob
import json

ORDER = ["t0", "t1", "a_begin", "b_locked", "c_decided", "d_inserted", "e_created", "f_flushed",
         "g_synced", "h_handled", "tq", "j_committed", "t2", "t3", "t4"]


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    calls = {}
    for path in glob.glob("/tmp/duet-trace/*.jsonl"):
        with open(path) as lines:
            for line in lines:
                marks = json.loads(line)
                calls.setdefault(marks.pop("call"), {}).update(marks)
    complete = [marks for marks in calls.values() if all(key in marks for key in ORDER)]
    print(f"{len(complete)} calls with every mark")
    for start, end in zip(ORDER, ORDER[1:]):
        spans = [(marks[end] - marks[start]) * 1000 for marks in complete]
        print(f"{start:>12} -> {end:12} p50 {quantile(spans, .5):6.2f} "
              f"p90 {quantile(spans, .9):6.2f} p99 {quantile(spans, .99):6.2f}")
    spans = [(marks["t4"] - marks["t0"]) * 1000 for marks in complete]
    print(f"{'t0':>12} -> {'t4':12} p50 {quantile(spans, .5):6.2f} "
          f"p90 {quantile(spans, .9):6.2f} p99 {quantile(spans, .99):6.2f}")


if __name__ == "__main__":
    main()
