"""Regenerates the golden outputs of test_config_golden by running real
Hydra 1.3 (hydra-core) on the same trees and arguments as cases.txt.

Absolute tree paths are written as <CONF>. Usage: python3 make_golden.py
"""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TREES = os.path.join(os.path.dirname(HERE), "trees")

APP = '''import hydra
@hydra.main(version_base="1.3", config_path={conf!r}, config_name="config")
def main(cfg):
    pass
if __name__ == "__main__":
    main()
'''


def last_error_lines(stderr: str) -> str:
    """Python warnings lose their source location; a traceback (Hydra prints
    one for a few errors) keeps only its final message line."""
    lines = []
    for line in stderr.split("\n"):
        if line.startswith("  warnings.warn("):
            continue
        lines.append(re.sub(r"^\S+\.py:\d+: UserWarning: ", "UserWarning: ", line))
    text = "\n".join(lines)
    if "Traceback" not in text:
        return text
    head = text[: text.index("Traceback")]
    tail = text.rstrip("\n").split("\n")[-1]
    return head + tail.split(": ", 1)[1] + "\n"


def main() -> None:
    with open(os.path.join(HERE, "cases.txt")) as f:
        cases = [line.rstrip("\n").split("|") for line in f if line.strip() and not line.startswith("#")]
    for name, tree, args in cases:
        conf = os.path.join(TREES, tree)
        with tempfile.TemporaryDirectory() as tmp:
            script = os.path.join(tmp, "qsens.py")
            with open(script, "w") as f:
                f.write(APP.format(conf=conf))
            env = dict(os.environ)
            env.pop("SCRATCH", None)
            env.pop("HYDRA_FULL_ERROR", None)
            proc = subprocess.run([sys.executable, script] + args.split(" "), cwd=tmp, env=env,
                                  capture_output=True, text=True)
        out = proc.stdout.replace(conf, "<CONF>").replace(tmp, "<CWD>")
        err = last_error_lines(proc.stderr).replace(conf, "<CONF>").replace(tmp, "<CWD>")
        with open(os.path.join(HERE, name + ".out"), "w") as f:
            f.write(out)
        with open(os.path.join(HERE, name + ".err"), "w") as f:
            f.write(err)
        with open(os.path.join(HERE, name + ".status"), "w") as f:
            f.write("fail\n" if proc.returncode else "ok\n")
        print(name, proc.returncode)


if __name__ == "__main__":
    main()
