"""``report.html``: one self-contained page (inline CSS, pictures inlined as PNG data URIs, no script, nothing
fetched) for a person to read a result offline.

For ``search``: the plan, the step and its breakdown, per-stage time and memory, the plan's picture, the
runners-up and baselines with why each lost. For ``explore``: the best point, the Pareto picture and every
front's points with their configuration, and every point's figures.
"""
from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from watos.report.labels import describe_plan, quantity

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1700px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:.9em}"""
STAGE_NOTE = ("<p class=note>Parts are seconds per micro-batch on one device of the stage: compute, recomputation, "
              "and the communication left exposed (the rest hides under compute).</p>")


def _table(header: list[str], rows: list[list[str]], left: int = 1, id_: str = "") -> str:
    """An HTML table; the first ``left`` columns left-aligned; cells escaped."""
    def cells(tag: str, values: list[str]) -> str:
        return "".join(f"<{tag}{' class=l' if i < left else ''}>{escape(str(v))}</{tag}>" for i, v in enumerate(values))
    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table{f' id={id_}' if id_ else ''}><tr>{cells('th', header)}</tr>{body}</table>"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n")


def _plans(result: dict, noun: str) -> str:
    """The best plan, runners-up, considered plans and baselines, and why each lost to the best."""
    best = result["best"]["step_time_s"]
    rows = [("WATOS best", result["best"])] + [(f"runner-up {i + 1}", r) for i, r in enumerate(result["runners_up"])]
    rows += [("considered", r) for r in result.get("considered", [])] + list(result.get("baselines", {}).items())
    table = []
    for name, r in rows:
        if "infeasible" in r:
            table.append([name, "-", "-", "-", "-", r["infeasible"]])
        elif "tokens_per_s" not in r:
            table.append([name, describe_plan(r["plan"]), "-", "-", "-", r["limited_by"]])
        else:
            why = "best" if r is result["best"] else f"{r['step_time_s'] / best - 1:+.1%} step time; {r['limited_by']}"
            table.append([name, describe_plan(r["plan"]), f"{r['tokens_per_s']:,.0f}", f"{r['mfu']:.1%}",
                          f"{r['peak_dram_gb_per_die']:.1f}", why])
    return _table(["plan", "configuration", "tokens/s", "MFU", f"peak memory GB/{noun}", "why it lost"], table, 2,
                  "plans")


def search_html(report: dict, pictures: dict[str, Path]) -> str:
    """The page of a ``search --out`` run: ``report`` is report.json, ``pictures`` caption → PNG file."""
    noun = report.get("device_noun", "die")
    best, plan = report["best"], report["plan"]
    summary = _table(["figure", "value"], [
        ["model", report["model"]], ["target", f"{report['target']} ({report.get('target_description', '')})"],
        ["stack", report["stack"]], ["plan", describe_plan(plan)], ["placement", plan["placement"]],
        ["borrowing", ", ".join(f"stage {b['sender']} → stage {b['helper']}: {b['gb']:.1f} GB per {noun}"
                                for b in plan["borrow"]) or "none"],
        ["step time", f"{report['step_time_s']:.4g} s"], ["tokens/s", f"{best['tokens_per_s']:,.0f}"],
        ["MFU", f"{best['mfu']:.1%}"],
        ["memory per " + noun, f"{best['peak_dram_gb_per_die']:.1f} GB of {report['memory_capacity_gb']:.4g} GB "
                               f"({report['dram_capacity_gb']:g} GB DRAM + {report['sram_capacity_gb']:.3g} GB SRAM)"],
        ["limited by", best["limited_by"]]], id_="summary")
    step = report["step_time_s"]
    breakdown = _table(["part", "seconds", "share of the step"],
                       [[k, f"{v:.4g}", f"{v / step:.1%}"] for k, v in report["breakdown_s"].items() if v > 0],
                       id_="breakdown")
    parts = sorted({k for st in report["stages"] for k, v in st["parts_s"].items() if v > 0})
    times = _table(["stage", "recompute", "per micro-batch (s)", *[f"{k} (s)" for k in parts], "DP exposed (s)",
                    "optimizer (s)"],
                   [[st["stage"], st["recompute"], f"{st['time_per_microbatch_s']:.4g}",
                     *[f"{st['parts_s'].get(k, 0.0):.3g}" for k in parts], f"{st['dp_exposed_s']:.3g}",
                     f"{st['optimizer_s']:.3g}"] for st in report["stages"]], 2, "stage-times")
    kinds = [k for k in ("weights", "gradients", "optimizer", "activations", "workspace", "framework",
                         "borrowed_out", "borrowed_in", "total") if any(k in st["memory_gb"] for st in report["stages"])]
    memory = _table(["stage", *[f"{k} (GB)" for k in kinds]],
                    [[st["stage"], *[f"{st['memory_gb'].get(k, 0.0):.2f}" for k in kinds]] for st in report["stages"]],
                    id_="stage-memory")
    images = "".join(f"<h2>{escape(caption)}</h2>{_image(path, caption)}" for caption, path in pictures.items())
    body = (f"<h2>Plan and step</h2>{summary}<h2>Where the step goes</h2>{breakdown}"
            f"<h2>Per stage: time per micro-batch</h2>{STAGE_NOTE}{times}<h2>Per stage: memory per {noun}</h2>{memory}"
            f"{images}<h2>Runners-up and baselines</h2>{_plans(report, noun)}"
            "<p class=note>trace.json next to this file opens in ui.perfetto.dev or chrome://tracing.</p>")
    return _page(f"watos search {report['model']} on {report['target']}", body)


def explore_html(result: dict, pareto: Path) -> str:
    """The page of an ``explore --out`` run: the best point, the Pareto picture, every front's points and
    every point's figures."""
    best = result["best"]
    head = (_table(["figure", "value"], [["template", result["template"]], ["models", ", ".join(result["models"])],
                                         ["points", f"{result['evaluated']} ({result['feasible']} feasible)"],
                                         ["objective", result["objective"]],
                                         ["best point", " ".join(f"{k}={v:g}" for k, v in sorted(best["point"].items()))
                                          if best else "no feasible point"]], id_="summary"))
    fronts = "".join(f"<h3>{escape(name.replace('_', ' '))}</h3>" + _points(front) for name, front in result["pareto"].items())
    body = (f"{head}<h2>Pareto fronts</h2>{_image(pareto, 'Pareto fronts')}{fronts}"
            f"<h2>Every point</h2>{_points(result['points'])}")
    return _page(f"watos explore {', '.join(result['models'])} on {result['template']}", body)


def _points(points: list[dict]) -> str:
    keys = ("throughput", "tokens_per_joule", "dram_capacity_gb", "power_w", "compute_area_mm2")
    rows = []
    for p in points:
        config = " ".join(f"{k}={v:g}" for k, v in sorted(p["point"].items()))
        if "infeasible" in p:
            rows.append([config, p["infeasible"], *[""] * len(keys)])
            continue
        figures = [f"{p[k] * quantity(k)[1]:,.4g}" for k in keys]
        rows.append([config, "; ".join(describe_plan(r["plan"]) for r in p["results"].values()), *figures])
    return _table(["point", "strategy", *[quantity(k)[0] for k in keys]], rows, 2)
