#!/usr/bin/env bash
# Installs the Debian packages eco_train needs to build, test and plot (idempotent).
set -euo pipefail
pkgs=(build-essential cmake pkg-config git nlohmann-json3-dev libspdlog-dev libfmt-dev catch2
      libopenblas-dev libpcre2-dev gnuplot-nox libopenmpi-dev openmpi-bin
      python3)  # tools/ablate_stats.py (multi-seed statistics), tools/code_churn.py
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup_deps: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
