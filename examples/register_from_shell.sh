#!/usr/bin/env bash
# Register a model from any pipeline, in any language: this one is plain bash speaking the NATS
# text protocol over TCP, with no client library. It publishes the documented JSON command on
# model.register and waits for the registry's answer on model.registered.<name> or
# model.rejected.<name>.
#
#   usage: register_from_shell.sh NAME VERSION ARTIFACT_URI
#   env:   NATS_HOSTPORT (default 127.0.0.1:4222), NATS_USER / NATS_PASSWORD (optional)
#   exit:  0 registered, 1 rejected, 2 usage or connection error
set -euo pipefail
export LC_ALL=C  # ${#payload} must count bytes

if [ $# -ne 3 ]; then
  echo "usage: $0 NAME VERSION ARTIFACT_URI" >&2
  exit 2
fi
name=$1 version=$2 uri=$3
server=${NATS_HOSTPORT:-127.0.0.1:4222}
host=${server%:*} port=${server##*:}

payload=$(printf '{"name":"%s","version":"%s","artifact_uri":"%s"}' "$name" "$version" "$uri")
auth=""
if [ -n "${NATS_USER:-}" ]; then
  auth=$(printf ',"user":"%s","pass":"%s"' "$NATS_USER" "${NATS_PASSWORD:-}")
fi

exec 3<>"/dev/tcp/$host/$port" || { echo "cannot connect to NATS at $server" >&2; exit 2; }
read -r _info <&3
printf 'CONNECT {"verbose":false,"pedantic":false,"name":"shell-pipeline"%s}\r\n' "$auth" >&3
# Subscribe before publishing, so the answer cannot be missed.
printf 'SUB model.registered.%s 1\r\nSUB model.rejected.%s 2\r\n' "$name" "$name" >&3
printf 'PUB model.register %d\r\n%s\r\n' "${#payload}" "$payload" >&3

while read -r -t 120 line <&3; do
  line=${line%$'\r'}
  case $line in
    PING) printf 'PONG\r\n' >&3 ;;
    -ERR*) echo "NATS refused: $line" >&2; exit 2 ;;
    MSG*)
      read -r body <&3
      body=${body%$'\r'}
      case $body in
        *"\"version\":\"$version\""*) ;;
        *) continue ;;  # another version of the same model
      esac
      printf '%s\n' "$body"
      case $line in
        "MSG model.registered."*) exit 0 ;;
        *) exit 1 ;;
      esac
      ;;
  esac
done
echo "no answer from the registry within 120 s" >&2
exit 2
