#!/usr/bin/env bash
# Installs dermedge on the board (run as root on the board, from an unpacked release folder that
# holds bin/dermedge, models/ and board/). Idempotent; keeps an existing /etc/dermedge/dermedge.toml.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo $0)" >&2; exit 2; }
[ -x "$here/bin/dermedge" ] || { echo "install.sh: $here/bin/dermedge missing; build it with board/cross-build.sh and copy it to bin/" >&2; exit 2; }

getent group video >/dev/null || groupadd --system video
id -u dermedge >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /var/lib/dermedge \
  --shell /usr/sbin/nologin --groups video dermedge

install -d -m 0755 /opt/dermedge/bin /opt/dermedge/models /etc/dermedge
install -m 0755 "$here/bin/dermedge" /opt/dermedge/bin/dermedge
cp -r "$here/models/." /opt/dermedge/models/
chmod -R a+rX /opt/dermedge/models
[ -f "$here/README.md" ] && install -m 0644 "$here/README.md" /opt/dermedge/README.md
if [ ! -f /etc/dermedge/dermedge.toml ]; then
  install -m 0644 "$here/board/dermedge.toml" /etc/dermedge/dermedge.toml
fi
install -m 0644 "$here/board/99-dermatoscope.rules" /etc/udev/rules.d/99-dermatoscope.rules
install -m 0644 "$here/board/dermedge.service" /etc/systemd/system/dermedge.service
install -m 0644 "$here/board/dermedge-serve.service" /etc/systemd/system/dermedge-serve.service
udevadm control --reload-rules && udevadm trigger --subsystem-match=video4linux || true

/opt/dermedge/bin/dermedge --ensemble /opt/dermedge/models/ensemble.toml inspect
systemctl daemon-reload
systemctl enable --now dermedge.service
echo "dermedge installed: journal in /var/lib/dermedge/journal.jsonl; logs: journalctl -u dermedge -f"
echo "For the clinic page instead: systemctl disable --now dermedge && systemctl enable --now dermedge-serve"
