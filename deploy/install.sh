#!/bin/sh
# Meshanics agent installer (SPEC §2, §4.5). Served by the control plane at
# /install.sh with the fleet CA and the hardened unit filled in; run it as
#
#   curl -fsSL --cacert <(printf '%s' '<CA PEM>') https://HOST:8443/install.sh |
#     sudo sh -s -- --url https://HOST:8443 --token mst_… --ca-pin sha256:…
#
# It checks the embedded CA against --ca-pin, downloads the agent for this
# machine's architecture over TLS that trusts only that CA, stages it with a
# temp file + rename, installs the unit (plus a drop-in for allowlisted
# config destinations), runs `meshanics-agent enroll` (which keeps an existing
# device key: re-running the installer is the upgrade) and restarts the
# service. No step downloads anything over an unpinned connection.
set -eu
set -f # no pathname expansion: values are never globs
umask 077

EMBEDDED_CA_PEM='@@MESHANICS_CA_PEM@@'

write_unit() {
	cat >"$1" <<'MESHANICS_AGENT_UNIT_EOF'
@@MESHANICS_AGENT_UNIT@@
MESHANICS_AGENT_UNIT_EOF
}

say() { printf 'meshanics-install: %s\n' "$*" >&2; }
die() {
	say "error: $*"
	exit 1
}

usage() {
	cat >&2 <<'USAGE'
usage: install.sh --url https://HOST:PORT --token mst_... --ca-pin sha256:HEX
                  [--name NAME] [--tag KEY=VALUE]...
                  [--allow-config-dest DIR]... [--allow-reload-unit UNIT]...
                  [--allow-reload-exec PATH]... [--allow-exec-probe PATH]...
                  [--container-runtime auto|podman|docker|none|PATH]
       layout (defaults for a real device):
                  [--bin-dir /usr/local/bin] [--config-dir /etc/meshanics]
                  [--data-dir /var/lib/meshanics] [--unit-dir /etc/systemd/system]
                  [--ca-file FILE] [--no-systemctl]
USAGE
	exit 2
}

URL=
TOKEN=
PIN=
NAME=
RUNTIME=
BIN_DIR=/usr/local/bin
CONFIG_DIR=/etc/meshanics
DATA_DIR=/var/lib/meshanics
UNIT_DIR=/etc/systemd/system
CA_FILE=
SYSTEMCTL=yes
# Arguments for `meshanics-agent enroll`, built as positional parameters
# later; collected here one per line (values are validated first).
EXTRA=
ALLOW_DESTS=

need_arg() { [ $# -ge 2 ] || die "$1 needs a value"; }

# plain VALUE: no whitespace, quotes, backslashes or '$' (values end up in
# agent.env and a systemd drop-in).
plain() {
	case $2 in
	'' | *[[:space:]]* | *\"* | *\'* | *\\* | *\$* | *\`* | *[*?[]*) die "$1: '$2' must be non-empty without whitespace, quotes, '\\', '\$', '\`' or glob characters" ;;
	esac
}

abs_path() {
	plain "$1" "$2"
	case $2 in
	*'|'* | *'&'* | *'%'*) die "$1: '$2' must not contain '|', '&' or '%'" ;;
	/*) ;;
	*) die "$1: '$2' must be an absolute path" ;;
	esac
}

add_extra() { EXTRA="$EXTRA$1
$2
"; }

while [ $# -gt 0 ]; do
	case $1 in
	--url) need_arg "$@"; URL=$2; shift 2 ;;
	--token) need_arg "$@"; TOKEN=$2; shift 2 ;;
	--ca-pin) need_arg "$@"; PIN=$2; shift 2 ;;
	--name) need_arg "$@"; plain --name "$2"; NAME=$2; shift 2 ;;
	--tag)
		need_arg "$@"
		plain --tag "$2"
		# The form here; the agent checks the characters (SPEC §4.1).
		case $2 in
		[!=]*=*) ;;
		*) die "--tag: '$2' must be KEY=VALUE" ;;
		esac
		add_extra -tag "$2"
		shift 2
		;;
	--allow-config-dest) need_arg "$@"; abs_path "$1" "$2"; add_extra -allow-config-dest "$2"; ALLOW_DESTS="$ALLOW_DESTS $2"; shift 2 ;;
	--allow-reload-unit) need_arg "$@"; plain "$1" "$2"; add_extra -allow-reload-unit "$2"; shift 2 ;;
	--allow-reload-exec) need_arg "$@"; abs_path "$1" "$2"; add_extra -allow-reload-exec "$2"; shift 2 ;;
	--allow-exec-probe) need_arg "$@"; abs_path "$1" "$2"; add_extra -allow-exec-probe "$2"; shift 2 ;;
	--container-runtime) need_arg "$@"; plain "$1" "$2"; RUNTIME=$2; shift 2 ;;
	--bin-dir) need_arg "$@"; abs_path "$1" "$2"; BIN_DIR=$2; shift 2 ;;
	--config-dir) need_arg "$@"; abs_path "$1" "$2"; CONFIG_DIR=$2; shift 2 ;;
	--data-dir) need_arg "$@"; abs_path "$1" "$2"; DATA_DIR=$2; shift 2 ;;
	--unit-dir) need_arg "$@"; abs_path "$1" "$2"; UNIT_DIR=$2; shift 2 ;;
	--ca-file) need_arg "$@"; CA_FILE=$2; shift 2 ;;
	--no-systemctl) SYSTEMCTL=no; shift ;;
	-h | --help) usage ;;
	*) say "unknown argument: $1"; usage ;;
	esac
done

[ -n "$URL" ] || { say "--url is required"; usage; }
[ -n "$TOKEN" ] || { say "--token is required"; usage; }
[ -n "$PIN" ] || { say "--ca-pin is required"; usage; }
case $URL in
https://*) ;;
*) die "--url must start with https://" ;;
esac
URL=${URL%/}
plain --url "$URL"
case $TOKEN in
mst_*) plain --token "$TOKEN" ;;
*) die "--token must be an enrollment token mst_..." ;;
esac
PIN=$(printf '%s' "$PIN" | tr 'A-F' 'a-f')
case $PIN in
sha256:*) ;;
*) die "--ca-pin must be sha256:<64 hex digits>" ;;
esac
HEX=${PIN#sha256:}
[ ${#HEX} -eq 64 ] || die "--ca-pin must be sha256:<64 hex digits>"
case $HEX in
*[!0-9a-f]*) die "--ca-pin must be sha256:<64 hex digits>" ;;
esac

if [ "$SYSTEMCTL" = yes ] && [ "$(id -u)" -ne 0 ]; then
	die "run as root (sudo sh -s -- ...): the agent is installed as a system service"
fi
# Checked before the token is spent: the service needs a running systemd.
if [ "$SYSTEMCTL" = yes ] && { [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; }; then
	die "systemd is not running on this machine: the agent is installed as a systemd service (or pass --no-systemctl and run it yourself)"
fi

for tool in uname sed tr base64 sha256sum mktemp chmod mv; do
	command -v "$tool" >/dev/null 2>&1 || die "'$tool' is needed but not installed"
done

case $(uname -s) in
Linux) ;;
*) die "the agent runs on Linux only, not $(uname -s)" ;;
esac
case $(uname -m) in
x86_64 | amd64) ARCH=amd64 ;;
aarch64 | arm64 | armv8*) ARCH=arm64 ;;
*) die "no agent build for architecture $(uname -m) (amd64 and arm64 are supported)" ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshanics-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

# The CA: embedded by the server that served this script, or --ca-file.
CA="$WORK/ca.pem"
if [ -n "$CA_FILE" ]; then
	cp "$CA_FILE" "$CA" || die "cannot read --ca-file $CA_FILE"
else
	case $EMBEDDED_CA_PEM in
	@@*) die "this copy of install.sh has no fleet CA: fetch it from the control plane (https://HOST:8443/install.sh) or pass --ca-file" ;;
	esac
	printf '%s\n' "$EMBEDDED_CA_PEM" >"$CA"
fi

# Pin check: sha256 of the CA certificate's DER must equal --ca-pin.
ca_der_sha256() {
	sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$1" |
		sed '1d;$d' | tr -d ' \t\r\n' | base64 -d 2>/dev/null | sha256sum | sed 's/ .*//'
}
[ "$(grep -c 'BEGIN CERTIFICATE' "$CA")" -eq 1 ] || die "the fleet CA must be exactly one PEM certificate"
GOT=$(ca_der_sha256 "$CA")
[ "$GOT" = "$HEX" ] || die "fleet CA does not match --ca-pin (got sha256:$GOT): refusing to continue"
say "fleet CA matches the pin"

# Download the agent over TLS that trusts only the pinned CA.
BIN="$BIN_DIR/meshanics-agent"
mkdir -p "$BIN_DIR"
NEW="$BIN_DIR/.meshanics-agent.new.$$"
SRC="$URL/downloads/meshanics-agent-linux-$ARCH"
say "downloading $SRC"
# --cacert alone is not a pin: curl (and wget) still add the system CA
# directory, so any publicly trusted certificate for the host would do. An
# empty CA directory leaves the fleet CA as the only root.
NOCAPATH="$WORK/no-system-cas"
mkdir "$NOCAPATH"
if command -v curl >/dev/null 2>&1; then
	curl -fsS --proto '=https' --tlsv1.2 --cacert "$CA" --capath "$NOCAPATH" --retry 3 -o "$NEW" "$SRC" ||
		{ rm -f "$NEW"; die "download failed: $SRC"; }
elif command -v wget >/dev/null 2>&1 && wget --help 2>&1 | grep -q -- '--ca-directory'; then
	wget -q --https-only --ca-certificate="$CA" --ca-directory="$NOCAPATH" -O "$NEW" "$SRC" ||
		{ rm -f "$NEW"; die "download failed: $SRC"; }
else
	die "curl (or GNU wget) is needed to download the agent"
fi
chmod 0755 "$NEW"
"$NEW" -version >/dev/null 2>&1 || { rm -f "$NEW"; die "the downloaded agent does not run on this machine"; }
mv -f "$NEW" "$BIN"
say "installed $("$BIN" -version 2>/dev/null || echo agent)"

# Enroll: generates the key on this machine (or keeps the existing one, so
# re-running is an upgrade of the same identity), checks the server against
# the pin, writes device.key, device.crt, ca.pem, root.json and agent.env.
set -- enroll -url "$URL" -token "$TOKEN" -ca-pin "$PIN" -config-dir "$CONFIG_DIR" -data-dir "$DATA_DIR"
[ -z "$NAME" ] || set -- "$@" -name "$NAME"
[ -z "$RUNTIME" ] || set -- "$@" -container-runtime "$RUNTIME"
OLDIFS=$IFS
IFS='
'
for a in $EXTRA; do
	set -- "$@" "$a"
done
IFS=$OLDIFS
mkdir -p "$CONFIG_DIR" "$DATA_DIR"
chmod 0700 "$CONFIG_DIR" "$DATA_DIR"
"$BIN" "$@" || die "enrollment failed (see the message above); mint a fresh token if this one is spent or expired"

# The unit, and a drop-in that opens the allowlisted config destinations.
mkdir -p "$UNIT_DIR"
UNIT="$UNIT_DIR/meshanics-agent.service"
UNIT_NEW="$UNIT_DIR/.meshanics-agent.service.new.$$"
write_unit "$UNIT_NEW"
case $(sed -n 1p "$UNIT_NEW") in
@@*)
	# A copy of install.sh not served by the control plane: keep the unit
	# that is installed, if any.
	rm -f "$UNIT_NEW"
	[ -f "$UNIT" ] || die "this copy of install.sh carries no unit: install deploy/systemd/meshanics-agent.service as $UNIT first"
	;;
*)
	# A non-default layout: point the unit at it.
	sed -e "s|/usr/local/bin/meshanics-agent|$BIN|g" \
		-e "s|/etc/meshanics|$CONFIG_DIR|g" \
		-e "s|/var/lib/meshanics|$DATA_DIR|g" "$UNIT_NEW" >"$UNIT_NEW.2"
	mv -f "$UNIT_NEW.2" "$UNIT_NEW"
	chmod 0644 "$UNIT_NEW"
	mv -f "$UNIT_NEW" "$UNIT"
	;;
esac
DROPIN_DIR="$UNIT_DIR/meshanics-agent.service.d"
DROPIN="$DROPIN_DIR/50-allowlist.conf"
if [ -n "$ALLOW_DESTS" ]; then
	mkdir -p "$DROPIN_DIR"
	chmod 0755 "$DROPIN_DIR"
	{
		echo "# Written by install.sh: allowlisted config destinations (-allow-config-dest)."
		echo "[Service]"
		for d in $ALLOW_DESTS; do
			echo "ReadWritePaths=-$d"
		done
	} >"$DROPIN.new.$$"
	chmod 0644 "$DROPIN.new.$$"
	mv -f "$DROPIN.new.$$" "$DROPIN"
else
	rm -f "$DROPIN"
fi
# The runtime trust directories the agent may populate must exist to be
# writable under ProtectSystem=strict.
for d in /etc/containers /etc/docker; do
	[ ! -d "$d" ] || [ "$SYSTEMCTL" = no ] || mkdir -p "$d/certs.d"
done

if [ "$SYSTEMCTL" = yes ]; then
	systemctl daemon-reload
	systemctl enable meshanics-agent.service >/dev/null 2>&1 || systemctl enable meshanics-agent.service
	systemctl restart meshanics-agent.service
	# Type=exec: restart returns once the agent runs; a configuration error
	# (exit 78) shows within moments, so look once more before saying done.
	sleep 2
	if ! systemctl is-active --quiet meshanics-agent.service; then
		systemctl status --no-pager --lines=20 meshanics-agent.service >&2 || true
		die "meshanics-agent.service is not running after the restart (see the status above)"
	fi
	say "meshanics-agent.service restarted and running; check it with: systemctl status meshanics-agent"
else
	say "skipped systemctl (--no-systemctl); start $BIN with the settings in $CONFIG_DIR/agent.env"
fi
