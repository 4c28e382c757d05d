# Shared helpers for the set-up scripts (sourced, not run).
say() { printf '[setup] %s\n' "$*" >&2; }

_apt_updated=""
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then say "need root to install: ${missing[*]}"; exit 1; fi
  if [ -z "$_apt_updated" ]; then apt-get update -q >/dev/null; _apt_updated=1; fi
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Installs packages whose postinst would start a system service (nginx's default site on port
# 80): a policy-rc.d that refuses every start, for the length of the install.
apt_install_quiet_service() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local policy=/usr/sbin/policy-rc.d made=""
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made=1; fi
  if ! apt_install "${missing[@]}"; then [ -z "$made" ] || rm -f "$policy"; return 1; fi
  if [ -n "$made" ]; then rm -f "$policy"; fi
}
