#!/usr/bin/env python3
"""Hydra oracle: runs real Hydra 1.3 and qsens on the same config trees and
command lines (cases.yaml) and compares what each produced.

    run_oracle.py --qsens build/src/app/qsens [--only REGEX] [--jobs N]
    run_oracle.py --self-test      # Hydra against Hydra: checks the normalisation

Per case both programs run in a fresh temporary working directory, with the
same fixed environment, and the outcome is reduced to named sections:

  exit status   "0" or "non-zero" (Hydra exits 1 on config errors, qsens 2)
  stdout        --cfg: the printed config; otherwise the launch lines with
                their timestamps replaced
  stderr        failures only: the message lines (tracebacks reduced to the
                final exception message, the HYDRA_FULL_ERROR hint dropped)
  files         the names of all files written under the working dir
  <path>        successful runs and sweeps: each written .hydra/config.yaml
                and overrides.yaml (text), hydra.yaml and multirun.yaml
                (selected keys, parsed)

Absolute paths of the working directory become <CWD> and clock readings
(the `${now:...}` formats the trees and Hydra's defaults use) become
<NOW:fmt>, so two runs at different times and places compare equal. A case
passes when all sections are equal; a failure prints a unified diff
(Hydra's text first). Prints one line per case and a closing
"N passed, N failed" line; exits 0 only if no case failed, 77 when Hydra
cannot be imported.
"""
import argparse
import concurrent.futures
import difflib
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TREES_DIR = os.path.join(HERE, "trees")
SHIPPED_CONF = os.path.normpath(os.path.join(HERE, "..", "..", "conf"))
HYDRA_APP = os.path.join(HERE, "hydra_app.py")
CASES_FILE = os.path.join(HERE, "cases.yaml")

# A hung program must not hang the suite; the slowest case (a 10-job sweep
# in Python) takes about 2 s, so 60 s only ever triggers on a real hang.
RUN_TIMEOUT_S = 60

# strftime formats whose readings are replaced by <NOW:fmt>: Hydra's default
# run/sweep dirs use the first and last, the example tree the middle one.
# Longest first so a date is never matched inside a longer reading.
CLOCK_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%H-%M-%S")
LOG_TIMESTAMP = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]", re.M)

# Hydra nodes that configure Python machinery (plugins, logging, help
# texts, callbacks) or describe the Python install; qsens may omit them.
PYTHON_ONLY_HYDRA_KEYS = ("launcher", "help", "hydra_help", "hydra_logging",
                          "job_logging", "env", "callbacks", "searchpath")

# Search path lines of Hydra's own config sources in error messages
# ("Config search path:"); the spec lets qsens list only its own dirs.
PYTHON_ONLY_SEARCH_PATH_LINES = ("\tprovider=hydra, path=pkg://hydra.conf",
                                 "\tprovider=schema, path=structured://")

# Printed by Hydra when its own traceback trimming fails (e.g. for an
# interpolation error in hydra.run.dir), before the traceback itself.
HYDRA_FORMATTER_NOISE = ("An error occurred during Hydra's exception formatting:",
                         "AssertionError()")

# The hydra.yaml / multirun.yaml keys compared for run and multirun cases.
SELECTED_HYDRA_KEYS = (
    "run.dir", "sweep.dir", "sweep.subdir", "mode", "output_subdir",
    "overrides.hydra", "overrides.task", "job.name", "job.chdir",
    "job.override_dirname", "job.id", "job.num", "job.config_name",
    "runtime.version_base", "runtime.output_dir", "runtime.choices",
)
ABSENT = "<absent>"

CASE_FIELDS = ("name", "tree", "argv", "expect", "env")
VALID_EXPECT = ("ok", "error", "any")


def oracle_environment():
    """One fixed environment for both programs: UTC clock (so <NOW:...>
    normalisation can recompute the readings), no SCRATCH (the example
    tree's ${oc.env:SCRATCH,/tmp} default) nor any QSENS_* setting of the
    caller (the shipped tree reads some), one set variable for the
    ${oc.env:...} cases, short error output, and qsens' task switched off."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SCRATCH", "HYDRA_FULL_ERROR") and not k.startswith("QSENS_")}
    env.update(TZ="UTC", QSENS_ORACLE_HOME="/home/oracle", QSENS_DRY_RUN="1")
    return env


# ---------------------------------------------------------------- cases

def load_cases(yaml):
    with open(CASES_FILE, encoding="utf-8") as f:
        cases = yaml.safe_load(f)
    if not isinstance(cases, list):
        raise ValueError(f"{CASES_FILE}: expected a list of cases")
    seen = set()
    for i, case in enumerate(cases):
        where = f"{CASES_FILE}: case #{i}"
        if not isinstance(case, dict) or not isinstance(case.get("name"), str):
            raise ValueError(f"{where}: needs a 'name'")
        where = f"{CASES_FILE}: case '{case['name']}'"
        if case["name"] in seen:
            raise ValueError(f"{where}: duplicate name")
        seen.add(case["name"])
        unknown = sorted(set(case) - set(CASE_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
        if case.get("tree") not in ("example", "features", "shipped"):
            raise ValueError(f"{where}: 'tree' must be example, features or shipped")
        argv = case.get("argv")
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"{where}: 'argv' must be a list of strings")
        case.setdefault("expect", "ok")
        if case["expect"] not in VALID_EXPECT:
            raise ValueError(f"{where}: 'expect' must be one of {VALID_EXPECT}")
        env = case.setdefault("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ValueError(f"{where}: 'env' must map names to strings")
    return cases


def tree_dir(case):
    """The config dir of a case, or None (with the reason) when absent."""
    if case["tree"] == "shipped":
        if not os.path.isfile(os.path.join(SHIPPED_CONF, "config.yaml")):
            return None, f"{SHIPPED_CONF}/config.yaml is absent"
        return SHIPPED_CONF, None
    return os.path.join(TREES_DIR, case["tree"]), None


def case_argv(case, tree):
    """The case's arguments with {trees} expanded; -cp <tree> is prepended
    unless the case chooses its own config path."""
    argv = [a.replace("{trees}", TREES_DIR) for a in case["argv"]]
    if any(a in ("-cp", "--config-path") or a.startswith("--config-path=") for a in argv):
        return argv
    return ["-cp", tree] + argv


# ------------------------------------------------------------ running

class Outcome:
    """What one program did for one case, and how to normalise its text."""

    def __init__(self, rc, stdout, stderr, cwd, started, finished):
        self.rc, self.stdout, self.stderr, self.cwd = rc, stdout, stderr, cwd
        self.replacements = [(os.path.realpath(cwd), "<CWD>"), (cwd, "<CWD>")]
        # Every clock reading the program could have taken while it ran
        # (one second of slack either side for rounding of the start/end).
        readings = {}
        for second in range(int(started) - 1, int(finished) + 2):
            moment = time.gmtime(second)
            for fmt in CLOCK_FORMATS:
                readings.setdefault(time.strftime(fmt, moment), f"<NOW:{fmt}>")
        self.replacements += sorted(readings.items(), key=lambda kv: -len(kv[0]))

    def normalise(self, text):
        text = LOG_TIMESTAMP.sub("[<TS>]", text)
        for old, new in self.replacements:
            text = text.replace(old, new)
        return text


def run_program(command, argv, env, workdir):
    os.makedirs(workdir)
    started = time.time()
    try:
        proc = subprocess.run(command + argv, cwd=workdir, env=env, capture_output=True,
                              text=True, errors="replace", timeout=RUN_TIMEOUT_S)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = -1, "", f"<killed after {RUN_TIMEOUT_S} s>"
    except OSError as e:
        rc, out, err = -1, "", f"<cannot run {command[0]}: {e}>"
    return Outcome(rc, out, err, workdir, started, time.time())


# ------------------------------------------------------- sections

def error_message_lines(outcome):
    """The message a user reads. A Python traceback (Hydra prints one for
    errors raised outside its reporting wrapper) is reduced to the text of
    the final exception without its type; warnings are reduced to their
    message; the HYDRA_FULL_ERROR hint, the search path entries of Hydra's
    Python packages and outer blank lines are dropped."""
    lines = outcome.normalise(outcome.stderr).splitlines()
    tb_starts = [i for i, l in enumerate(lines) if l == "Traceback (most recent call last):"]
    if tb_starts:
        before = lines[:tb_starts[0]]
        rest = lines[tb_starts[-1] + 1:]
        while rest and rest[0].startswith(" "):  # the frames
            rest.pop(0)
        if rest:
            rest[0] = re.sub(r"^[A-Za-z_][\w.]*: ", "", rest[0], count=1)
        lines = before + rest
    kept = []
    for line in lines:
        warning = re.match(r"^\S+:\d+: \w*Warning: (.*)$", line)
        if warning:
            kept.append(warning.group(1))
        elif line.startswith("  warnings.warn("):
            continue
        elif line.startswith("Set the environment variable HYDRA_FULL_ERROR=1"):
            continue
        elif line.rstrip() in PYTHON_ONLY_SEARCH_PATH_LINES + HYDRA_FORMATTER_NOISE:
            continue
        else:
            kept.append(line.rstrip())
    while kept and not kept[0]:
        kept.pop(0)
    while kept and not kept[-1]:
        kept.pop()
    return "\n".join(kept) + "\n"


def shown_config_kind(argv):
    """The --cfg/-c argument (job, hydra, all), or None."""
    for i, arg in enumerate(argv):
        if arg.startswith("--cfg="):
            return arg.split("=", 1)[1]
        if arg in ("--cfg", "-c") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def has_package_flag(argv):
    return any(a in ("-p", "--package") or a.startswith("--package=") for a in argv)


def dump(yaml, data):
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def parse_yaml(yaml, text):
    try:
        return yaml.safe_load(text), None
    except yaml.YAMLError as e:
        return None, f"<unparseable YAML: {e}>\n{text}"


def comparable_choices(choices):
    """runtime.choices without hydra/* (selections of Python plugins)."""
    if not isinstance(choices, dict):
        return choices
    return {k: v for k, v in choices.items() if not str(k).startswith("hydra/")}


def comparable_hydra_node(node):
    """The hydra node minus what is Python-only or legitimately differs:
    plugin/logging/help nodes, the sweeper's Python class, the Hydra
    version, and config source providers (only file dirs are kept)."""
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in PYTHON_ONLY_HYDRA_KEYS}
    if isinstance(node.get("sweeper"), dict):
        node["sweeper"] = {k: v for k, v in node["sweeper"].items() if k != "_target_"}
    runtime = node.get("runtime")
    if isinstance(runtime, dict):
        runtime = {k: v for k, v in runtime.items() if k != "version"}
        sources = runtime.get("config_sources")
        if isinstance(sources, list):
            runtime["config_sources"] = [
                {"path": s.get("path"), "schema": s.get("schema")}
                for s in sources if isinstance(s, dict) and s.get("schema") == "file"]
        if "choices" in runtime:
            runtime["choices"] = comparable_choices(runtime["choices"])
        node["runtime"] = runtime
    return node


def lookup(node, dotted):
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return node


def selected_hydra_keys(yaml, text):
    """hydra.yaml / multirun.yaml: the selected hydra keys, then (for
    multirun.yaml) the task config that follows the hydra node."""
    data, error = parse_yaml(yaml, text)
    if error:
        return error
    if not isinstance(data, dict):
        return f"<not a mapping>\n{text}"
    hydra = data.get("hydra", {})
    picked = {key: lookup(hydra, key) for key in SELECTED_HYDRA_KEYS}
    picked["runtime.choices"] = comparable_choices(picked["runtime.choices"])
    task = {k: v for k, v in data.items() if k != "hydra"}
    return dump(yaml, {"hydra (selected keys)": picked, "task keys": task})


def config_output(yaml, outcome, argv):
    """--cfg output: exact text, except where it holds the hydra node, which
    is compared parsed, minus the parts qsens need not reproduce."""
    text = outcome.normalise(outcome.stdout)
    if shown_config_kind(argv) not in ("hydra", "all") or has_package_flag(argv):
        return text
    data, error = parse_yaml(yaml, text)
    if error:
        return error
    if isinstance(data, dict) and "hydra" in data:
        data = dict(data, hydra=comparable_hydra_node(data["hydra"]))
    return dump(yaml, data)


def written_files(outcome):
    found = []
    for root, _dirs, files in os.walk(outcome.cwd):
        for name in files:
            found.append(os.path.relpath(os.path.join(root, name), outcome.cwd))
    return sorted(found)


def file_contents(yaml, outcome, files):
    """The .hydra/ files and multirun.yaml of a run or sweep, by path."""
    sections = {}
    for rel in files:
        name = os.path.basename(rel)
        if name not in ("config.yaml", "overrides.yaml", "hydra.yaml", "multirun.yaml"):
            continue
        with open(os.path.join(outcome.cwd, rel), encoding="utf-8", errors="replace") as f:
            text = outcome.normalise(f.read())
        if name in ("hydra.yaml", "multirun.yaml"):
            text = selected_hydra_keys(yaml, text)
        sections[outcome.normalise(rel)] = text
    return sections


def exit_status(rc):
    if rc == 0:
        return "0\n"
    return "non-zero\n" if rc > 0 else f"killed (status {rc})\n"


def sections_of(yaml, outcome, argv):
    """Everything compared for one outcome. The file list is compared in
    every case (--cfg and failed runs must write nothing); file contents
    only for successful runs and sweeps."""
    files = written_files(outcome)
    sections = {"exit status": exit_status(outcome.rc)}
    if outcome.rc == 0 and shown_config_kind(argv) is not None:
        sections["stdout"] = config_output(yaml, outcome, argv)
    else:
        sections["stdout"] = outcome.normalise(outcome.stdout)
    if outcome.rc != 0:
        sections["stderr"] = error_message_lines(outcome)
    sections["files"] = "".join(outcome.normalise(f) + "\n" for f in files)
    if outcome.rc == 0 and shown_config_kind(argv) is None:
        sections.update(file_contents(yaml, outcome, files))
    return sections


def section_diffs(expected, actual, other_name):
    """Unified diffs of the sections that differ, Hydra's side first. When
    one side failed and the other did not, the rest would differ wholesale:
    only the exit status and the error message are shown."""
    if expected["exit status"] != actual["exit status"]:
        keep = ("exit status", "stderr")
        expected = {k: v for k, v in expected.items() if k in keep}
        actual = {k: v for k, v in actual.items() if k in keep}
    diffs = []
    for name in list(expected) + [n for n in actual if n not in expected]:
        want, got = expected.get(name, ""), actual.get(name, "")
        if want == got:
            continue
        label_want = f"hydra/{name}" if name in expected else f"hydra/{name} (not written)"
        label_got = f"{other_name}/{name}" if name in actual else f"{other_name}/{name} (not written)"
        diffs.extend(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                          label_want, label_got))
    return "".join(line if line.endswith("\n") else line + "\n" for line in diffs)


# --------------------------------------------------------------- driver

def run_case(yaml, case, other_command, other_name, scratch):
    """Returns (status, detail): status is PASS, FAIL or SKIP."""
    tree, why_not = tree_dir(case)
    if tree is None:
        return "SKIP", why_not
    argv = case_argv(case, tree)
    env = dict(oracle_environment(), **case["env"])
    case_dir = os.path.join(scratch, case["name"])
    hydra_out = run_program([sys.executable, HYDRA_APP], argv, env, os.path.join(case_dir, "hydra"))
    hydra_ok = hydra_out.rc == 0
    if case["expect"] != "any" and hydra_ok != (case["expect"] == "ok"):
        return "FAIL", (f"the case expects {case['expect']} but Hydra exited {hydra_out.rc}"
                        f" (fix cases.yaml):\n{hydra_out.stderr[-2000:]}")
    other_out = run_program(other_command, argv, env, os.path.join(case_dir, other_name))
    diff = section_diffs(sections_of(yaml, hydra_out, argv),
                         sections_of(yaml, other_out, argv), other_name)
    return ("FAIL", diff) if diff else ("PASS", "")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--qsens", help="path of the qsens binary under test")
    target.add_argument("--self-test", action="store_true",
                        help="compare Hydra with itself (validates the normalisation)")
    parser.add_argument("--only", help="run only cases whose name matches this regex")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        import hydra
        import yaml
    except ImportError as e:
        print(f"hydra_oracle: skipped: the reference Hydra is not importable ({e});"
              " install hydra-core 1.3 in this python3", flush=True)
        return 77
    try:
        cases = load_cases(yaml)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"hydra_oracle: {e}", file=sys.stderr)
        return 2
    if args.only:
        cases = [c for c in cases if re.search(args.only, c["name"])]
    if args.self_test:
        other_command, other_name = [sys.executable, HYDRA_APP], "hydra-again"
    else:
        if not os.access(args.qsens, os.X_OK):
            print(f"hydra_oracle: '{args.qsens}' is not an executable", file=sys.stderr)
            return 2
        other_command, other_name = [os.path.abspath(args.qsens)], "qsens"
    print(f"hydra_oracle: Hydra {hydra.__version__} vs {' '.join(other_command)}: "
          f"{len(cases)} cases", flush=True)

    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    with tempfile.TemporaryDirectory(prefix="qsens-hydra-oracle-") as scratch, \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_case, yaml, c, other_command, other_name, scratch)
                   for c in cases]
        for case, future in zip(cases, futures):
            status, detail = future.result()
            counts[status] += 1
            if status == "SKIP":
                print(f"SKIP {case['name']}: {detail}", flush=True)
            elif status == "FAIL":
                print(f"FAIL {case['name']}", flush=True)
                print("".join("    " + line + "\n" for line in detail.splitlines()), end="", flush=True)
            else:
                print(f"PASS {case['name']}", flush=True)
    skipped = f" ({counts['SKIP']} skipped)" if counts["SKIP"] else ""
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed{skipped}")
    return 0 if counts["FAIL"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
