#!/usr/bin/env bash
# Throwaway certificates for the scenario examples (docs/scenarios/): a private CA and, for
# each NAME, a certificate for that name signed by it, usable by servers and clients.
#
#   examples/make-certs.sh DIR NAME...
#
# Writes DIR/ca.crt and DIR/ca.key (once; an existing CA is reused, so certificates made in
# several runs chain to the same one) and DIR/NAME.crt, DIR/NAME.key: ECDSA P-256, valid 30
# days, keys in PKCS#8 and readable by their owner only. Needs openssl 3.
set -euo pipefail

if (($# < 2)); then
    echo "usage: $0 DIR NAME..." >&2
    exit 2
fi
dir=$1
shift
mkdir -p "$dir"
umask 077

if [[ ! -s $dir/ca.crt || ! -s $dir/ca.key ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=sallyport example CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    chmod 644 "$dir/ca.crt"
fi

for name in "$@"; do
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=$name" -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
    # The extensions are given here rather than copied from the request: a CA signs what it
    # decides, and servers and clients both accept the result.
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 30 -out "$dir/$name.crt" \
        -extfile <(printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$name") \
        2>/dev/null
    rm -f "$dir/$name.csr"
    chmod 644 "$dir/$name.crt"
done
# The CA's serial file is bookkeeping: without it the next certificate gets a random serial.
rm -f "$dir/ca.srl"
