#!/usr/bin/env bash
# Installs the system tools l2lb's lab and tests use, on Debian, without prompts.
# Idempotent: skips apt entirely when every tool is already there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have arping || need+=(arping)
have ndisc6 || need+=(ndisc6)
have tshark || need+=(tshark)
have iptables || need+=(iptables)
have curl || need+=(curl)
have ping || need+=(iputils-ping)
have pgrep || need+=(procps)
have kubectl || need+=(kubernetes-client)
have python3 || need+=(python3)
python3 -c 'import venv' 2>/dev/null || need+=(python3-venv)
# The official Python Kubernetes client, a second real client the API-server
# tests drive; Debian installs it for the system interpreter.
/usr/bin/python3 -c 'import kubernetes' 2>/dev/null || need+=(python3-kubernetes)
# promtool checks and unit-tests deploy/monitoring's alerts; prometheus
# evaluates them against the lab (tests/alerts.rs).
have promtool && have prometheus || need+=(prometheus)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages ${need[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "install-deps: apt-get install ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [[ " ${need[*]} " == *" prometheus "* ]]; then
    # The package starts a Prometheus service on :9090 scraping this host;
    # the tests run their own (in a lab namespace), so stop the one we just
    # installed and keep it from starting at boot. Where no service manager
    # runs (containers) there is nothing to stop.
    if [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus >/dev/null 2>&1 || true
    else
      service prometheus stop >/dev/null 2>&1 || true
    fi
  fi
fi

if ! have cargo; then
  # A fresh Debian machine has no Rust toolchain new enough (Debian's rustc is
  # too old for edition 2024), so use rustup's installer.
  echo "install-deps: installing the Rust toolchain with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
