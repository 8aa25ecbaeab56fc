#!/usr/bin/env python3
"""The CTR learner's peers on the same stream and the same features.

    learner_peers.py --export WINDOWS.csv --adstream target/bench/learner-seed-5c.json --out DIR
    learner_peers.py --table DIR        # one table over every learner-peers-*.json in DIR

Input: the windows `adstream-bench learner --export` wrote, in stream order
(one row per 10 s window x segment: impressions i, clicks c, adstream's
progressive prediction and the true clicks per impression q). Installs
nothing: scripts/bench.sh learner runs it from .venv/bench-learner
(vowpalwabbit, river).

Methods, all scored by progressive validation (each example is predicted
before it is learned):
- adstream: its predictions from the export (FTRL learned per window).
- optimum: the generator's true q (the Bayes-optimal predictor).
- vw: Vowpal Wabbit (--loss_function logistic --link logistic, its default
  learner), fed per example in stream order; also VW's own progressive
  "average loss".
- river: river's LogisticRegression with optim.FTRLProximal (alpha 0.1,
  beta 1, l1 1, l2 1: adstream's defaults), per example.
- count baseline: per segment, Beta-smoothed clicks per impression
  (c_s + m*g) / (i_s + m) with m = 100 and g the global clicks per
  impression so far; predicts all segments of a window before counting it.

Per-example feeding (the per-event peers): a window x segment with i
impressions and c clicks becomes c positive and max(i - c, 0) negative
examples (negatives clamped at 0 when clicks exceed impressions in a tiny
window), positives spread evenly among the row's examples, and the rows of
one window interleaved round robin, so that the order approximates the
stream's. Features (the same as adstream's): bias, campaign, format,
country, device, hour of day, and the crosses campaign x format, format x
country, format x device.

Log loss per impression, the same for every method: per row, the examples'
binary log losses (each with the prediction made before it was learned),
plus, for a row with c > i, the term -(i - c) ln(1 - p0) (p0: the prediction
before the row) that the binomial loss -c ln p - (i - c) ln(1 - p) has there;
all divided by the impressions. For a prediction constant over a row
(adstream, optimum, baseline) this is exactly that binomial loss.
Calibration: predicted clicks (i x the mean prediction of the row's
examples) / observed clicks, over rows past the warm-up.
"""

import argparse
import csv
import glob
import json
import math
import os
import sys
import time

EPS = 1e-15


def ll_pos(p):
    return -math.log(min(max(p, EPS), 1 - EPS))


def ll_neg(p):
    return -math.log(1 - min(max(p, EPS), 1 - EPS))


def read_rows(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append(
                {
                    "w": int(r["window_start_us"]),
                    "seen": int(r["seen"]),
                    "campaign": r["campaign"],
                    "format": r["format"],
                    "country": r["country"],
                    "device": r["device"],
                    "hour": int(r["hour"]),
                    "i": int(r["impressions"]),
                    "c": int(r["clicks"]),
                    "p_adstream": float(r["p_adstream"]),
                    "q": float(r["q_true"]),
                }
            )
    return rows


def windows(rows):
    """Lists of row indexes, one per window, in order."""
    out, cur, last = [], [], None
    for k, r in enumerate(rows):
        if r["w"] != last and cur:
            out.append(cur)
            cur = []
        last = r["w"]
        cur.append(k)
    if cur:
        out.append(cur)
    return out


def labels(i, c):
    """The row's examples: c positives, max(i - c, 0) negatives, spread evenly."""
    n = c + max(i - c, 0)
    return [((j + 1) * c) // n > (j * c) // n for j in range(n)]


def schedule(rows, wins):
    """(row index, label) per example, in feeding order."""
    order = []
    for win in wins:
        lab = [labels(rows[k]["i"], rows[k]["c"]) for k in win]
        longest = max((len(x) for x in lab), default=0)
        for j in range(longest):
            for k, x in zip(win, lab):
                if j < len(x):
                    order.append((k, x[j]))
    return order


class Score:
    """Per-row accumulation of a method's predictions (see the module doc)."""

    def __init__(self, rows):
        self.rows = rows
        self.loss = [0.0] * len(rows)
        self.psum = [0.0] * len(rows)
        self.n = [0] * len(rows)
        self.first = [None] * len(rows)

    def add(self, k, p, y):
        self.loss[k] += ll_pos(p) if y else ll_neg(p)
        self.psum[k] += p
        self.n[k] += 1
        if self.first[k] is None:
            self.first[k] = p

    def add_row(self, k, p):
        """A prediction constant over row k."""
        r = self.rows[k]
        self.loss[k] += r["c"] * ll_pos(p) + max(r["i"] - r["c"], 0) * ll_neg(p)
        self.psum[k] += p
        self.n[k] += 1
        self.first[k] = p

    def report(self, warmup):
        out = {}
        for name, keep in (("all", lambda r: True), ("past_warmup", lambda r: r["seen"] >= warmup)):
            loss = imps = clicks = pred = 0.0
            for k, r in enumerate(self.rows):
                if not keep(r) or (r["i"] == 0 and r["c"] == 0):
                    continue
                l = self.loss[k]
                if r["c"] > r["i"] and self.first[k] is not None:
                    l -= (r["c"] - r["i"]) * ll_neg(self.first[k])
                loss += l
                imps += r["i"]
                clicks += r["c"]
                if self.n[k]:
                    pred += r["i"] * self.psum[k] / self.n[k]
            out["log_loss" if name == "all" else "log_loss_past_warmup"] = loss / imps if imps else None
            out["calibration" if name == "all" else "calibration_past_warmup"] = pred / clicks if clicks else None
        return out


def constant(rows, key):
    s = Score(rows)
    for k, r in enumerate(rows):
        s.add_row(k, r[key])
    return s


def baseline(rows, wins, m=100.0):
    s = Score(rows)
    seg = {}
    gi = gc = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for win in wins:
        g = gc / gi if gi else 0.1
        g = min(max(g, 1e-6), 1 - 1e-6)
        preds = []
        for k in win:
            r = rows[k]
            si, sc = seg.get((r["campaign"], r["format"], r["country"], r["device"]), (0, 0))
            preds.append(min((sc + m * g) / (si + m), 1 - 1e-6))
        for k, p in zip(win, preds):
            r = rows[k]
            key = (r["campaign"], r["format"], r["country"], r["device"])
            si, sc = seg.get(key, (0, 0))
            seg[key] = (si + r["i"], sc + r["c"])
            gi += r["i"]
            gc += r["c"]
            s.add_row(k, p)
    return s, time.perf_counter() - t0, time.process_time() - c0


def vw_line(r):
    return "|c {campaign} |f {format} |k {country} |d {device} |h h{hour}".format(**r)


def run_vw(rows, order):
    from vowpalwabbit import pyvw

    vw = pyvw.Workspace("--loss_function logistic --link logistic -b 20 -q cf -q fk -q fd --quiet")
    feats = [vw_line(r) for r in rows]
    s = Score(rows)
    t0, c0 = time.perf_counter(), time.process_time()
    for k, y in order:
        ex = vw.parse(("1 " if y else "-1 ") + feats[k])
        vw.learn(ex)
        # The prediction VW made for this example before its update (what
        # its progressive average loss scores).
        p = ex.get_simplelabel_prediction()
        vw.finish_example(ex)
        s.add(k, p, y)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    own = vw.get_sum_loss() / vw.get_weighted_examples() if vw.get_weighted_examples() else None
    vw.finish()
    return s, wall, cpu, own


def river_x(r):
    c, f, k, d = r["campaign"], r["format"], r["country"], r["device"]
    return {
        "bias": 1.0,
        "c=" + c: 1.0,
        "f=" + f: 1.0,
        "k=" + k: 1.0,
        "d=" + d: 1.0,
        "h=%d" % r["hour"]: 1.0,
        "cf=" + c + "|" + f: 1.0,
        "fk=" + f + "|" + k: 1.0,
        "fd=" + f + "|" + d: 1.0,
    }


def run_river(rows, order):
    from river import linear_model, optim

    model = linear_model.LogisticRegression(
        optimizer=optim.FTRLProximal(alpha=0.1, beta=1.0, l1=1.0, l2=1.0), intercept_lr=0.0
    )
    xs = [river_x(r) for r in rows]
    s = Score(rows)
    t0, c0 = time.perf_counter(), time.process_time()
    for k, y in order:
        x = xs[k]
        p = model.predict_proba_one(x)[True]
        model.learn_one(x, y)
        s.add(k, p, y)
    return s, time.perf_counter() - t0, time.process_time() - c0


def peers(args):
    rows = read_rows(args.export)
    wins = windows(rows)
    with open(args.adstream) as f:
        ad = json.load(f)
    fig = {x["metric"]: x["median"] for x in ad["figures"]}
    cfg = ad["config"]
    warmup = cfg["warmup_events"]
    events = sum(r["i"] + r["c"] for r in rows)
    m = 1e6 / events
    order = schedule(rows, wins)
    print(
        "learner peers: %d events, %d window x segment rows, %d windows, %d per-event examples"
        % (events, len(rows), len(wins), len(order)),
        flush=True,
    )
    results = []
    opt = constant(rows, "q").report(warmup)

    def add(name, s, wall, cpu, extra=None):
        rep = s.report(warmup)
        rep.update(
            method=name,
            wall_s=wall,
            cpu_s=cpu,
            cpu_s_per_m_events=None if cpu is None else cpu * m,
            vs_optimum=rep["log_loss"] / opt["log_loss"],
            vs_optimum_past_warmup=rep["log_loss_past_warmup"] / opt["log_loss_past_warmup"],
        )
        rep.update(extra or {})
        results.append(rep)
        print("  %-16s log loss %.6f (%.4f x optimum), calibration past warm-up %s, CPU %s s"
              % (name, rep["log_loss"], rep["vs_optimum"], fmt(rep["calibration_past_warmup"], 4), fmt(cpu, 2)),
              flush=True)

    add("optimum", constant(rows, "q"), None, None)
    add("adstream", constant(rows, "p_adstream"), fig.get("learn_wall_s"),
        fig["learn_cpu_s_per_m_events"] / m,
        {"rust_log_loss": fig.get("log_loss"), "window_cpu_s_per_m_events": fig.get("window_cpu_s_per_m_events"),
         "total_cpu_s_per_m_events": fig.get("total_cpu_s_per_m_events")})
    s, wall, cpu = baseline(rows, wins)
    add("count baseline", s, wall, cpu)
    methods = args.methods.split(",")
    if "vw" in methods:
        s, wall, cpu, own = run_vw(rows, order)
        add("vw", s, wall, cpu, {"vw_average_loss": own})
    if "river" in methods:
        s, wall, cpu = run_river(rows, order)
        add("river", s, wall, cpu)
    ad_cpu = fig["learn_cpu_s_per_m_events"]
    for r in results:
        r["cpu_ratio_vs_adstream"] = None if r["cpu_s_per_m_events"] is None else r["cpu_s_per_m_events"] / ad_cpu
    doc = {
        "bench": "learner-peers-" + ad["bench"][len("learner-"):],
        "config": dict(cfg, events=events, rows=len(rows), examples=len(order), adstream_json=args.adstream,
                       export=args.export, python=sys.version.split()[0]),
        "versions": versions(),
        "results": results,
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, doc["bench"] + ".json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    print_table([doc])
    print("  -> " + path)


def versions():
    out = {}
    for mod in ("vowpalwabbit", "river"):
        try:
            from importlib.metadata import version

            out[mod] = version(mod)
        except Exception:  # not installed: that peer was not run
            out[mod] = None
    return out


def fmt(x, digits):
    return "n/a" if x is None else "%.*f" % (digits, x)


def print_table(docs):
    print()
    print("| setting | method | log loss | vs optimum | log loss past warm-up | vs optimum past warm-up "
          "| vs VW (all / past warm-up) | calibration (past warm-up) | wall s | CPU s per 1M events "
          "| CPU ÷ adstream's |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in docs:
        c = d["config"]
        setting = "%s, %d campaigns, %d events at %g/s" % (c["traffic"], c["campaigns"], c["events"],
                                                          c["event_rate"])
        vw = next((r for r in d["results"] if r["method"] == "vw"), None)
        for r in d["results"]:
            ratio = r["cpu_ratio_vs_adstream"]
            if ratio is None:
                ratio_s = "n/a"
            elif ratio >= 10:
                ratio_s = "%.0f×" % ratio
            else:
                ratio_s = "%.2f×" % ratio
            vs_vw = "n/a"
            if vw is not None:
                vs_vw = "%.4f / %.4f" % (r["log_loss"] / vw["log_loss"],
                                         r["log_loss_past_warmup"] / vw["log_loss_past_warmup"])
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                setting, r["method"], fmt(r["log_loss"], 5), fmt(r["vs_optimum"], 4),
                fmt(r["log_loss_past_warmup"], 5), fmt(r["vs_optimum_past_warmup"], 4), vs_vw,
                fmt(r["calibration_past_warmup"], 4), fmt(r["wall_s"], 3),
                fmt(r["cpu_s_per_m_events"], 3), ratio_s))
            if r["method"] == "adstream" and r.get("total_cpu_s_per_m_events") is not None:
                print("| %s | adstream incl. windowing | | | | | | | | %s | |"
                      % (setting, fmt(r["total_cpu_s_per_m_events"], 3)))
            if r.get("vw_average_loss") is not None:
                print("| %s | vw's own progressive average loss | %s | | | | | | | | |"
                      % (setting, fmt(r["vw_average_loss"], 5)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", help="the windows CSV of adstream-bench learner --export")
    ap.add_argument("--adstream", help="adstream-bench learner's JSON for the same stream")
    ap.add_argument("--out", default="target/bench")
    ap.add_argument("--methods", default="vw,river", help="per-event peers to run: vw,river")
    ap.add_argument("--table", help="print one table over DIR/learner-peers-*.json")
    args = ap.parse_args()
    if args.table:
        docs = []
        for p in sorted(glob.glob(os.path.join(args.table, "learner-peers-*.json"))):
            with open(p) as f:
                docs.append(json.load(f))
        print_table(docs)
        return
    if not (args.export and args.adstream):
        ap.error("--export and --adstream are needed (or --table)")
    peers(args)


if __name__ == "__main__":
    main()
