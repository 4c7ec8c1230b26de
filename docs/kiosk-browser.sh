#!/usr/bin/env bash
# kiosk-browser.sh URL: a wall display of camstream's /kiosk page that looks after itself.
#
# Starts Chromium in kiosk mode (full screen, no bars, no error dialogs, no "restore
# pages?" bubble, a fresh incognito profile each time) on URL, and starts it again
# whenever it ends, however it ends (a crash, kill -9, the out-of-memory killer):
# with systemd (docs/camstream-kiosk.service) or without it.
#
# The display, unless CAMSTREAM_KIOSK_DISPLAY says (auto, wayland, x11, cage, xvfb):
#   a Wayland session ($WAYLAND_DISPLAY): Chromium in it;
#   an X session ($DISPLAY): Chromium in it;
#   neither, with cage installed (Debian's "cage", a Wayland compositor that shows
#     one program full screen): cage runs Chromium on the console, as at boot;
#   neither, without cage: an Xvfb display of its own (a screen nobody sees: for
#     tests, or for a VNC server or a screen grabber to show).
#
# A page cannot heal a dead renderer: when Chromium's page crashes or hangs, the
# browser lives on with a dead picture.  So, besides restarting a browser that ended,
# the script asks the server whether its kiosk is alive: the page is opened with
# ?kiosk=ID (CAMSTREAM_KIOSK_ID, default kiosk-HOSTNAME: one name per display), the
# page sends a heartbeat every 5 s under that name, and the server's status (the
# "status" next to URL's page, with URL's token) lists it.  If the server answers
# but has not seen the kiosk live for CAMSTREAM_KIOSK_WATCHDOG_S seconds (default
# 60; 0 turns this off; it needs python3), the browser is restarted.  While the
# server does not answer, the browser is left alone: the page reconnects by itself
# (within about 6 s of the server's return: keep the limit above 15 s).  A browser
# just started gets 30 s more, to start and load its page.
#
# Settings (environment):
#   CAMSTREAM_KIOSK_BROWSER     the browser (default: chromium, else chromium-browser)
#   CAMSTREAM_KIOSK_DISPLAY     auto | wayland | x11 | cage | xvfb (default auto)
#   CAMSTREAM_KIOSK_SIZE        the Xvfb screen, WIDTHxHEIGHT (default 1920x1080)
#   CAMSTREAM_KIOSK_ID          the display's name in the server's status (default kiosk-HOSTNAME)
#   CAMSTREAM_KIOSK_WATCHDOG_S  restart a browser whose page has not been live this long (default 60)
#   CAMSTREAM_KIOSK_RESTART_S   the pause before a restart, seconds (default 2; doubled, up to
#                               60, while the browser keeps ending within 30 s of its start)
#   CAMSTREAM_KIOSK_ARGS        more arguments for Chromium (split at spaces)
#
# Logs go to stderr (the journal under systemd), one line per event.  SIGTERM, SIGINT
# or SIGHUP end the browser and the script's own Xvfb, then the script (status 0).
# Needs Linux (/proc/uptime: a clock that NTP does not move).
set -u

log() { echo "kiosk-browser: $*" >&2; }

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: kiosk-browser.sh URL   (e.g. http://camera.local:8080/kiosk)" >&2
    exit 2
fi
url="$1"

browser="${CAMSTREAM_KIOSK_BROWSER:-}"
if [ -z "$browser" ]; then
    browser="$(command -v chromium || command -v chromium-browser || true)"
fi
if [ -z "$browser" ] || ! [ -x "$(command -v "$browser" || true)" ]; then
    echo "kiosk-browser: no Chromium found (install Debian's chromium, or set CAMSTREAM_KIOSK_BROWSER)" >&2
    exit 2
fi
mode="${CAMSTREAM_KIOSK_DISPLAY:-auto}"
size="${CAMSTREAM_KIOSK_SIZE:-1920x1080}"
kiosk_id="${CAMSTREAM_KIOSK_ID:-kiosk-$(cat /proc/sys/kernel/hostname 2>/dev/null || echo display)}"
kiosk_id="$(printf '%s' "$kiosk_id" | tr -c 'A-Za-z0-9_-' '-' | cut -c1-64)"
watchdog_s="${CAMSTREAM_KIOSK_WATCHDOG_S:-60}"
restart_s="${CAMSTREAM_KIOSK_RESTART_S:-2}"
for number in "$watchdog_s" "$restart_s"; do
    case "$number" in
        '' | *[!0-9]*) echo "kiosk-browser: CAMSTREAM_KIOSK_WATCHDOG_S and _RESTART_S are whole seconds" >&2; exit 2 ;;
    esac
done
case "$size" in
    [1-9]*x[1-9]*) ;;
    *) echo "kiosk-browser: CAMSTREAM_KIOSK_SIZE is WIDTHxHEIGHT, e.g. 1920x1080" >&2; exit 2 ;;
esac
case "$mode" in
    auto)
        if [ -n "${WAYLAND_DISPLAY:-}" ]; then mode=wayland
        elif [ -n "${DISPLAY:-}" ]; then mode=x11
        elif command -v cage >/dev/null; then mode=cage
        else mode=xvfb
        fi ;;
    wayland | x11 | cage | xvfb) ;;
    *) echo "kiosk-browser: CAMSTREAM_KIOSK_DISPLAY is auto, wayland, x11, cage or xvfb" >&2; exit 2 ;;
esac
if [ "$mode" = cage ] && ! command -v cage >/dev/null; then
    echo "kiosk-browser: cage is not installed (Debian: apt install cage)" >&2
    exit 2
fi
case "$url" in
    *'?kiosk='* | *'&kiosk='*) ;;
    *'?'*) url="$url&kiosk=$kiosk_id" ;;
    *) url="$url?kiosk=$kiosk_id" ;;
esac

# Monotonic seconds (since boot): a jump of the wall clock moves neither timer.
now() { local up; read -r up _ </proc/uptime; echo "${up%.*}"; }

runtime="${XDG_RUNTIME_DIR:-/tmp}"
workdir="$(mktemp -d "$runtime/camstream-kiosk.XXXXXX")" || exit 1
child=""      # the browser (or cage running it)
xvfb=""       # our own Xvfb, if any
stopping=0

stop_pid() {  # stop_pid PID: SIGTERM, SIGKILL after 5 s, reaped
    local pid="$1" waited=0
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 50 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    [ -n "$child" ] && stop_pid "$child"
    [ -n "$xvfb" ] && stop_pid "$xvfb"
    child=""
    xvfb=""
    rm -rf "$workdir"
}

on_signal() {
    stopping=1
    log "stopping"
    cleanup
    exit 0
}
trap on_signal TERM INT HUP
trap cleanup EXIT

if [ "$mode" = xvfb ]; then
    # Xvfb picks a free display number itself and writes it (-displayfd) once it accepts clients.
    Xvfb -displayfd 3 -screen 0 "${size}x24" -nolisten tcp 3>"$workdir/display" 2>"$workdir/xvfb.log" &
    xvfb=$!
    for _ in $(seq 100); do
        [ -s "$workdir/display" ] && break
        kill -0 "$xvfb" 2>/dev/null || break
        sleep 0.1
    done
    if ! [ -s "$workdir/display" ]; then
        log "Xvfb did not start: $(tail -n 1 "$workdir/xvfb.log" 2>/dev/null)"
        exit 1
    fi
    export DISPLAY=":$(tr -d '\n' <"$workdir/display")"
    unset WAYLAND_DISPLAY
    log "Xvfb on $DISPLAY ($size)"
fi

flags=(
    --kiosk --noerrdialogs --disable-session-crashed-bubble --incognito
    --no-first-run --no-default-browser-check --disable-infobars --disable-translate
    --disable-features=Translate,TranslateUI --disable-pinch --overscroll-history-navigation=0
    --check-for-update-interval=31536000 --disable-component-update --password-store=basic
    --autoplay-policy=no-user-gesture-required
)
case "$mode" in
    xvfb) flags+=(--window-position=0,0 "--window-size=${size/x/,}" --ozone-platform=x11) ;;
    x11) flags+=(--ozone-platform=x11) ;;
    wayland | cage) flags+=(--ozone-platform=wayland) ;;
esac
if [ "$(id -u)" -eq 0 ]; then
    flags+=(--no-sandbox)  # Chromium refuses to run as root with its sandbox
    log "running as root: Chromium's sandbox is off (run the unit as a user of its own)"
fi
# shellcheck disable=SC2206
extra=(${CAMSTREAM_KIOSK_ARGS:-})

# The page's status URL and whether the kiosk is live there: "live", "missing" (the
# server answered: not listed, or not live) or "unreachable".
read -r -d '' check_py <<'PY'
import base64, json, sys, urllib.parse, urllib.request
page, ident = sys.argv[1], sys.argv[2]
parts = urllib.parse.urlsplit(page)
token = urllib.parse.parse_qs(parts.query).get("token")
netloc = parts.hostname or ""
if ":" in netloc:
    netloc = f"[{netloc}]"
if parts.port:
    netloc += f":{parts.port}"
status = urllib.parse.urljoin(urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")), "status")
if token:
    status += "?" + urllib.parse.urlencode({"token": token[-1]})
request = urllib.request.Request(status, headers={"Cache-Control": "no-store"})
if parts.username is not None:
    pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        kiosks = json.load(response).get("kiosks", [])
except (OSError, ValueError):
    print("unreachable")
    sys.exit()
live = any(isinstance(k, dict) and k.get("id") == ident and k.get("state") == "live" for k in kiosks)
print("live" if live else "missing")
PY
if [ "$watchdog_s" -gt 0 ] && ! command -v python3 >/dev/null; then
    log "no python3: the page's heartbeat is not watched (a browser that ends is still restarted)"
    watchdog_s=0
fi

pause="$restart_s"
while [ "$stopping" -eq 0 ]; do
    profile="$workdir/profile"
    rm -rf "$profile"
    mkdir -p "$profile"
    if [ "$mode" = cage ]; then
        cage -- "$browser" "${flags[@]}" "--user-data-dir=$profile" "${extra[@]}" "$url" &
    else
        "$browser" "${flags[@]}" "--user-data-dir=$profile" "${extra[@]}" "$url" &
    fi
    child=$!
    started="$(now)"
    alive_at=$((started + 30))  # time to start and load the page
    log "browser started (pid $child, $mode) on $url"
    checked="$started"
    while kill -0 "$child" 2>/dev/null; do
        sleep 1 &
        wait $! 2>/dev/null
        [ "$watchdog_s" -gt 0 ] || continue
        t="$(now)"
        [ $((t - checked)) -ge 5 ] || continue
        checked="$t"
        case "$(python3 -c "$check_py" "$url" "$kiosk_id" 2>/dev/null)" in
            live | unreachable) alive_at="$t" ;;  # the server down is no fault of the browser's
        esac
        if [ $((t - alive_at)) -ge "$watchdog_s" ]; then
            log "the page has not been live for $((t - alive_at)) s (kiosk $kiosk_id): restarting the browser"
            stop_pid "$child"
            break
        fi
    done
    wait "$child" 2>/dev/null
    code=$?
    child=""
    [ "$stopping" -eq 0 ] || break
    ran=$(($(now) - started))
    [ "$ran" -lt 30 ] || pause="$restart_s"  # it ran a while: back to the shortest pause
    log "browser ended (status $code) after $ran s; again in $pause s"
    sleep "$pause" &
    wait $! 2>/dev/null
    [ "$ran" -ge 30 ] || pause=$((pause * 2 > 60 ? 60 : pause * 2))
done
