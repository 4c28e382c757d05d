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
