#!/usr/bin/env bash
# Regenerates the golden files with real Hydra (pip install 'hydra-core>=1.3,<1.4').
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); conf=$(cd "$here/../../../conf" && pwd)
app=$(mktemp -d)/app.py
printf 'import hydra\n@hydra.main(version_base="1.3", config_path="%s", config_name="config")\ndef main(cfg):\n    pass\nmain()\n' "$conf" >"$app"
cd "$(mktemp -d)"
python3 "$app" --cfg job quant_pair=wfp4_afp8 dataset.size=large >"$here/cfg_job_wfp4_afp8_large.yaml"
for args in quant_pair=nope foo=1 +autoquant.method=x quant_pair=a,b; do
  name=$(printf '%s' "$args" | tr -c 'a-z0-9_' '_')
  python3 "$app" "$args" 2>&1 | sed "s#file://$conf#file://@CONF@#" >"$here/error_$name.txt" || true
done
