#!/usr/bin/env python3
"""Independent checks of one cell's artifacts (spec quant-and-scoring.md §6).

Usage: oracle_check.py RUN_DIR H5_FILE
- every JSON artifact equals json.dumps(json.load(f), indent=2) byte for byte;
- manifest, report JSON and the Markdown table are recomputed here from the
  state file with Python's own stable sort and %-formatting and must match;
- the SVG chart is well-formed XML with the top-20 bars longest first;
- sensitivity.h5 read with h5py agrees with the state.
Exit 0 on success, 1 on a mismatch, 77 when h5py or numpy is missing."""
import glob
import json
import os
import sys
import xml.etree.ElementTree as ET

try:
    import h5py
    import numpy as np
except ImportError as e:  # optional oracle packages
    print(f"skipped: {e}")
    sys.exit(77)

failures = []


def expect(cond, what):
    if not cond:
        failures.append(what)


def check_json_bytes(run_dir):
    paths = sorted(glob.glob(os.path.join(run_dir, "*.json")))
    expect(len(paths) == 3, f"expected 3 JSON files, found {paths}")
    for p in paths:
        text = open(p, encoding="ascii").read()
        expect(json.dumps(json.loads(text), indent=2) == text, f"{p}: not json.dumps(indent=2) bytes")


def recipe_name(handle):
    return handle + ".quant_recipe"


def is_head(state):
    return state.get("report_style", "committed") == "head"


def head_keys(state):
    """Optional HEAD keys (§6.2, §6.4), in order; the synthetic cell has a config
    text, so run_config is there."""
    return ["quantization", "run_config"] if is_head(state) else []


def check_quantization(q, state):
    """The synthetic cell is wint8_aint8: INT8_DEFAULT_CFG, per-channel weights,
    static per-tensor activations (spec §1.3, §2)."""
    expect(list(q) == ["base_format_name", "quant_granularity", "effective_quantizer_summary"],
           "quantization key order")
    expect(q["base_format_name"] == state["scheme"]["quant_formats"][0], "quantization base format")
    expect(q["quant_granularity"] == {"name": "per_channel", "quant_cfg_overrides": {}},
           "quantization granularity")
    expect(q["effective_quantizer_summary"] == {
        "*weight_quantizer": {"enable": True, "format": "int8", "num_bits": 8,
                              "granularity": "per_channel", "amax": "static"},
        "*input_quantizer": {"enable": True, "format": "int8", "num_bits": 8,
                             "granularity": "per_tensor", "amax": state["run"]["act_amax"]}},
        "quantizer summary")


def check_manifest(run_dir, state):
    scheme = state["scheme"]["name"]
    manifest = json.load(open(os.path.join(run_dir, scheme + "_quant_manifest.json")))
    stats = state["candidate_stats"]
    imp = {k: (max(v["scores"][:-1]) if len(v["scores"]) > 1 else 0.0) for k, v in stats.items()}
    ranking = sorted(stats, key=lambda k: imp[k])  # stable ascending
    rank = {k: i + 1 for i, k in enumerate(ranking)}
    expect(list(manifest) == ["scheme", "model", "dataset", "num_quantized_layers", "layers",
                              "autoquant_state", "layer_sensitivity", "sensitivity_ranking"]
           + head_keys(state), "manifest key order")
    if is_head(state):
        check_quantization(manifest["quantization"], state)
    ls = manifest["layer_sensitivity"]
    expect(list(ls) == list(stats), "layer_sensitivity group order")
    for k, v in stats.items():
        want = {"formats": v["formats"], "scores": v["scores"], "costs": v["costs"],
                "importance": imp[k], "rank": rank[k]}
        expect(ls[k] == want and list(ls[k]) == list(want), f"manifest entry {k}")
    expect(manifest["sensitivity_ranking"] == [{"name": k, "importance": imp[k]} for k in ranking],
           "sensitivity_ranking")
    best = state["best"]
    expect(manifest["autoquant_state"] == {
        "keys": ["candidate_stats", "best", "constraints"],
        "constraints": {"effective_bits": best["constraints"]["effective_bits"]},
        "score": best["score"], "is_satisfied": best["is_satisfied"]}, "autoquant_state block")
    modules = [m for v in stats.values() for m in v["module_names"]]
    expect(list(manifest["layers"]) == modules and manifest["num_quantized_layers"] == len(modules),
           "layers")
    expect(sum(v["scores"][v["formats"].index(best["recipe"][k[:-len(".quant_recipe")]])]
               for k, v in stats.items()) == best["score"], "best.score = sum of chosen scores")
    return imp


def table_rows(stats, imp):
    rows = []
    for k in sorted(stats, key=lambda k: imp[k], reverse=True):  # stable descending
        v = stats[k]
        handle = k[:-len(".quant_recipe")]
        if len(v["formats"]) == 1:
            rows.append((handle, 16.0, 0.0, v["uncompressed_cost"]))
        else:
            bits = float(v["formats"][0].split("effective-bits: ")[1].rstrip(")"))
            rows.append((handle, bits, v["scores"][0], v["costs"][0]))
    return rows


def check_reports(run_dir, state, imp):
    rows = table_rows(state["candidate_stats"], imp)
    report = json.load(open(os.path.join(run_dir, "layer-sensitivity-report.json")))
    expect(list(report)[-len(head_keys(state)) or len(report):] == head_keys(state),
           "report JSON optional keys")
    expect(report["layer_sensitivity"] == [
        {"layer": h, "num_bits": b, "sensitivity": s, "size_cost": c} for h, b, s, c in rows],
        "report JSON rows")
    md = open(os.path.join(run_dir, "layer-sensitivity-report.md"), encoding="utf-8").read()
    best = state["best"]
    if is_head(state):
        line = "|Effective bits (from search)|`%.4f`|\n|Total AutoQuant score|`%.6e`|\n"
        sections = [l for l in md.split("\n") if l.startswith("## ")]
        expect(sections[:4] == ["## Summary", "## Dataset", "## Quantization", "## Layer Sensitivity Table"]
               and sections[-1] == "## Composed Config (`composed-config.yaml`)", "md HEAD sections")
        composed = open(os.path.join(run_dir, "composed-config.yaml"), encoding="utf-8").read()
        expect(composed.startswith("quant_pair: wint8_aint8\n") and md.endswith("```yaml\n" + composed + "```\n"),
               "composed config file and block")
        expect(report["run_config"] == {"composed_yaml_path": "composed-config.yaml"}, "run_config")
    else:
        line = "**Effective bits (from search):** `%.4f`\n\n**Total AutoQuant score:** `%.6e`\n\n"
    expect(line % (best["constraints"]["effective_bits"], best["score"]) in md, "md effective bits and score")
    table = md.split("| :--- | :--- | :--- | :--- |\n", 1)[1].split("\n\n", 1)[0]
    want = "\n".join("|%s|%.1f|%.3e|%.3e|" % r for r in rows) + "\n"
    expect(table + "\n" == want, "md table rows")
    svg = ET.parse(os.path.join(run_dir, "layer-sensitivity-top.svg")).getroot()  # well-formed
    bars = [e for e in svg if e.tag.endswith("rect")]
    widths = [float(b.get("width")) for b in bars]
    expect(len(bars) == min(20, len(rows)) and widths == sorted(widths, reverse=True),
           "chart bars: top 20, longest first")


def check_h5(h5_path, state):
    stats = state["candidate_stats"]
    with h5py.File(h5_path, "r") as f:
        run = f["runs/0"]
        groups = run["groups"][()]
        handles = [h.decode() for h in groups["handle"]]
        expect([recipe_name(h) for h in handles] == list(stats), "h5 group handles")
        formats = [s.decode() for s in run["formats"][()]]
        scores, costs = run["group_scores"][()], run["group_costs"][()]
        raw_lin = run["linear_raw_scores"][()]
        lin_group = run["linears"][()]["group"]
        for i, (k, v) in enumerate(stats.items()):
            cols = [formats.index(fm) for fm in v["formats"]]
            expect(list(scores[i, cols]) == v["scores"] and list(costs[i, cols]) == v["costs"],
                   f"h5 scores/costs of {k}")
            chosen = state["best"]["recipe"][handles[i]]
            expect(formats[groups["chosen"][i]] == chosen, f"h5 chosen format of {k}")
            if len(v["formats"]) > 1:  # group raw score = member sum in module order
                members = np.nonzero(lin_group == i)[0]
                total = 0.0
                for m in members:
                    total += float(raw_lin[m, cols[0]])
                expect(total == v["raw_scores"][0], f"h5 member raw sum of {k}")
        front = run["pareto_front"][()]
        expect(np.all(np.diff(front["cost"]) > 0) and np.all(np.diff(front["score"]) < 0),
               "pareto front monotone")
        expect(list(run["sample_tokens"][()]) == [10, 13, 16, 19, 22], "sample tokens")
        expect(run.attrs["best_score"] == state["best"]["score"], "best_score attribute")
        yaml = run.attrs["config_yaml"]
        yaml = yaml.decode() if isinstance(yaml, bytes) else yaml
        expect(yaml.startswith("quant_pair: wint8_aint8\n"), "config_yaml attribute")
        expect(run["group_scores"].compression == "gzip" and run["group_scores"].shuffle,
               "group_scores filters")
        expect(f.attrs["format"] in (b"qsens-sensitivity", "qsens-sensitivity"), "format attribute")


def main():
    run_dir, h5_path = sys.argv[1], sys.argv[2]
    check_json_bytes(run_dir)
    state_path = glob.glob(os.path.join(run_dir, "*_autoquant_state.json"))[0]
    state = json.load(open(state_path))
    imp = check_manifest(run_dir, state)
    check_reports(run_dir, state, imp)
    check_h5(h5_path, state)
    for f in failures:
        print("FAIL:", f)
    print(f"oracle_check: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
