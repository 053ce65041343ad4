#!/usr/bin/env sh
# A test JWT for flashgate's identity.mode = "jwt" (HS256): `scripts/dev-jwt.sh <user id>`.
# Signs with $FLASHGATE_JWT_SECRET, expires in an hour; needs only openssl. For trying the
# API by hand (README's quickstart, docs/api.md); real tokens come from the store's login.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 <user id>" >&2; exit 2; }
: "${FLASHGATE_JWT_SECRET:?set FLASHGATE_JWT_SECRET to the JWT secret of the gateway}"
USER_ID=$1
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
claims=$(printf '{"sub":"%s","exp":%d}' "$USER_ID" $(($(date +%s) + 3600)) | b64url)
signature=$(printf '%s.%s' "$header" "$claims" |
  openssl dgst -sha256 -hmac "$FLASHGATE_JWT_SECRET" -binary | b64url)
echo "$header.$claims.$signature"
