# Sourced by local-cluster.sh and compose-cluster.sh, which define `cli` (the hangar CLI
# reaching their control plane): creates the key `demo` with the right to create buckets and
# the bucket `demo` it owns, and sets key_id and key_secret.
create_demo_key() {
    local out attempt
    # The frontends need the layout before they can create the key.
    for attempt in $(seq 60); do
        out=$(cli key create demo 2>/dev/null) && break
        # A creation that went through although the answer was lost: the key is there.
        out=$(cli key info demo --show-secret 2>/dev/null) && break
        [ "$attempt" = 60 ] && { echo "cannot create the key \`demo\`" >&2; exit 1; }
        sleep 0.5
    done
    key_id=$(echo "$out" | awk '/^Key ID:/ {print $3}')
    key_secret=$(echo "$out" | awk '/^Secret key:/ {print $3}')
    # An earlier run that stopped half way may have created it.
    cli bucket create demo >/dev/null 2>&1 || cli bucket info demo >/dev/null
    cli bucket allow --read --write --owner demo --key "$key_id" >/dev/null
    cli key allow --create-bucket "$key_id" >/dev/null
}
