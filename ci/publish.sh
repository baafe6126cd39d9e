#!/usr/bin/env bash
# ci/publish.sh — build moonboot's boot artifacts and talos-agent extension image and publish them
# to an OCI registry, from any CI (ci/github-actions/publish.yml runs these same subcommands).
#
# Usage: ci/publish.sh build      cargo build the release imager; cross-compile the static talos-agent
#                                 for each of $ARCHES (Debian's toolchain, into target/cross/, as the
#                                 imager's --agent-from-source does); `imager build --arch A
#                                 --agent-binary …` into $OUTPUT (boot-A/, extension-talos-agent-A/);
#                                 with arm64, scripts/rpi-inputs fetches the pinned Raspberry Pi CM3
#                                 inputs (boards/rpi-cm3.inputs) from Debian into $BOARD_INPUTS;
#                                 scripts/ipxe-inputs fetches the pinned iPXE binaries
#                                 (boards/ipxe.inputs) into $IPXE_INPUTS
#        ci/publish.sh publish    `imager publish` the multi-arch boot artifact index to
#                                 $REGISTRY/$IMAGE_PREFIX/boot:$TAG and the talos-agent extension
#                                 index to $REGISTRY/$IMAGE_PREFIX/talos-agent:$TAG, and, when
#                                 build fetched them ($OUTPUT/board-inputs.ok), the CM3 inputs to
#                                 $REGISTRY/$IMAGE_PREFIX/board-inputs:rpi-cm3-<digest of the pins>
#                                 (what `imager build --board rpi-cm3` pulls without --board-inputs)
#                                 and, likewise ($OUTPUT/ipxe-inputs.ok), the iPXE binaries to
#                                 …/board-inputs:ipxe-<digest of the pins> (what `imager build`
#                                 pulls for netboot/tftp/);
#                                 writes imager's JSON report to $PUBLISH_JSON and prints the digests
#        ci/publish.sh digests    print the digests of $PUBLISH_JSON again; as a Markdown table into
#                                 $GITHUB_STEP_SUMMARY and as step outputs into $GITHUB_OUTPUT when set
#        ci/publish.sh sign       cosign-sign, keyless, every pinned reference of $PUBLISH_JSON (each
#                                 index and per-architecture manifest) with the CI job's OIDC
#                                 identity (GitHub Actions: `permissions: id-token: write`; cosign
#                                 from sigstore/cosign-installer); docs/ci.md shows `cosign verify`
#        ci/publish.sh all        build, then publish
#        ci/publish.sh agents     only cross-compile the static talos-agent for each of $ARCHES (one
#                                 cargo invocation) and print their paths, one per line
#                                 (scripts/test builds them once so)
#
# Environment (default):
#   REGISTRY              registry host[:port] to publish to (ghcr.io)
#   IMAGE_PREFIX          repository prefix, lowercased (moonboot): …/boot and …/talos-agent
#   TAG                   tag of both images (required by publish), e.g. v1.10.5-cozy.1
#   ARCHES                architectures, space-separated (arm64 amd64)
#   OUTPUT                the build directory (_out)
#   PUBLISH_JSON          imager publish's JSON report ($OUTPUT/publish.json)
#   BOARD_INPUTS          where the CM3 board inputs are fetched to and published from
#                         ($OUTPUT/board-inputs)
#   IPXE_INPUTS           where the iPXE binaries are fetched to and published from
#                         ($OUTPUT/ipxe-inputs); IPXE_INPUTS_DEBS as scripts/ipxe-inputs reads it
#   IMAGER_BUILD_FLAGS    extra `imager build` flags, whitespace-separated, e.g.
#                         --registry-mirror ghcr.io=10.20.13.140:5000 --insecure-registry 10.20.13.140:5000
#   IMAGER_PUBLISH_FLAGS  extra `imager publish` flags, e.g. --insecure-registry HOST:PORT
#   SIGN_KEY              a PEM P-256 private key: publish signs with it (`imager publish --sign-key`),
#                         for CIs without an OIDC identity; verify with its public key
#   IMAGER                an imager binary to use instead of building target/release/imager
#   CARGO                 cargo for the host build (cargo); the static agents use Debian's /usr/bin/cargo
#   REGISTRY_AUTH_FILE    credentials for publish (Docker config.json format); else
#                         $DOCKER_CONFIG/config.json, else ~/.docker/config.json, else anonymous
# Needs what scripts/setup installs (Debian 12: cargo/rustc, the aarch64 cross toolchain, jq).
# Progress goes to stderr; publish and digests print the digests on stdout.
# Exit codes: 0 done; 1 a step failed (imager's one-line error says why); 2 bad usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REGISTRY=${REGISTRY:-ghcr.io}
IMAGE_PREFIX=${IMAGE_PREFIX:-moonboot}
IMAGE_PREFIX=${IMAGE_PREFIX,,} # OCI repository names are lowercase; GitHub owners need not be
ARCHES=${ARCHES:-arm64 amd64}
OUTPUT=${OUTPUT:-_out}
PUBLISH_JSON=${PUBLISH_JSON:-$OUTPUT/publish.json}
BOARD_INPUTS=${BOARD_INPUTS:-$OUTPUT/board-inputs}
IPXE_INPUTS=${IPXE_INPUTS:-$OUTPUT/ipxe-inputs}
IMAGER=${IMAGER:-}
read -r -a BUILD_FLAGS <<< "${IMAGER_BUILD_FLAGS:-}"
read -r -a PUBLISH_FLAGS <<< "${IMAGER_PUBLISH_FLAGS:-}"
read -r -a ARCH_LIST <<< "$ARCHES"

say() { echo "publish.sh: $*" >&2; }
die() { echo "publish.sh: error: $*" >&2; exit 1; }
usage() { echo "usage: ci/publish.sh build|publish|digests|sign|all|agents (--help)" >&2; exit 2; }

[ $# -eq 1 ] || usage
case "$1" in
  build|publish|digests|sign|all|agents) ACTION=$1 ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
  *) usage ;;
esac
[ ${#ARCH_LIST[@]} -gt 0 ] || die "ARCHES is empty (arm64, amd64)"
for a in "${ARCH_LIST[@]}"; do
  case "$a" in arm64|amd64) ;; *) die "ARCHES: unknown architecture $a (arm64, amd64)" ;; esac
done

imager_path() {
  if [ -n "$IMAGER" ]; then echo "$IMAGER"; else echo "${CARGO_TARGET_DIR:-$ROOT/target}/release/imager"; fi
}

# The Rust target triple of architecture $1.
triple_of() {
  case "$1" in
    arm64) echo aarch64-unknown-linux-gnu ;;
    amd64) echo x86_64-unknown-linux-gnu ;;
  esac
}

# The static talos-agent for each architecture given, in one cargo invocation (one --target each:
# the build scripts and proc macros are built once and the link-time optimisations run side by
# side), exactly as the imager's own builder builds one (imager/src/build/agent_extension.rs
# `compile`), so its cargo cache in target/cross/ is shared. Also boot-artifact's unstripped
# `sha256` example (examples/sha256), which tests/tests/sha256_hardware.rs disassembles. Prints
# each agent's path.
static_agents() {
  local a targets=()
  for a in "$@"; do targets+=(--target "$(triple_of "$a")"); done
  [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] \
    || die "Debian's cargo/rustc (cargo-web, rustc-web) are missing: run scripts/setup"
  say "cross-compiling the static talos-agent for $* (${targets[*]})"
  (cd "$ROOT" && env -u CARGO_ENCODED_RUSTFLAGS -u RUSTC_WRAPPER -u RUSTC_WORKSPACE_WRAPPER \
      -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET -u CARGO_MAKEFLAGS -u CARGO_PRIMARY_PACKAGE \
      RUSTC=/usr/bin/rustc RUSTFLAGS='-C target-feature=+crt-static' \
      CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
      /usr/bin/cargo build --release --locked -p talos-agent -p boot-artifact --bins --example sha256 "${targets[@]}" \
      --target-dir "$ROOT/target/cross" < /dev/null >&2) \
    || die "cross-compiling talos-agent for $* failed"
  for a in "$@"; do echo "$ROOT/target/cross/$(triple_of "$a")/release/talos-agent"; done
}

do_build() {
  local imager arch agent
  if [ -z "$IMAGER" ]; then
    say "building imager (cargo build --release -p moonboot-imager)"
    (cd "$ROOT" && "${CARGO:-cargo}" build --release --locked -p moonboot-imager < /dev/null >&2) \
      || die "cargo build of imager failed"
  fi
  imager=$(imager_path)
  [ -x "$imager" ] || die "no imager at $imager"
  static_agents "${ARCH_LIST[@]}" >/dev/null
  # The pinned iPXE binaries, fetched first so that the builds' netboot/tftp/ takes them from here.
  # The boot artifacts do not depend on them: a pin the archive no longer serves is a warning (the
  # builds then pull the published ones, and publish skips them), not a failed release.
  local ipxe_flags=()
  mkdir -p "$OUTPUT"
  say "scripts/ipxe-inputs $IPXE_INPUTS (the pinned iPXE binaries)"
  rm -f "$OUTPUT/ipxe-inputs.ok"
  if "$ROOT/scripts/ipxe-inputs" "$IPXE_INPUTS" >/dev/null; then
    touch "$OUTPUT/ipxe-inputs.ok"
    ipxe_flags=(--ipxe-dir "$IPXE_INPUTS")
  else
    say "warning: scripts/ipxe-inputs failed: the iPXE binaries are not published"
  fi
  for arch in "${ARCH_LIST[@]}"; do
    agent="$ROOT/target/cross/$(triple_of "$arch")/release/talos-agent"
    say "imager build --arch $arch --output $OUTPUT ${ipxe_flags[*]} ${BUILD_FLAGS[*]}"
    "$imager" build --arch "$arch" --agent-binary "$agent" --output "$OUTPUT" "${ipxe_flags[@]}" "${BUILD_FLAGS[@]}" >&2
    # The static binary itself, published as an artifact for cloud-init to fetch by digest.
    cp "$agent" "$OUTPUT/talos-agent-$arch.tmp" && mv -f "$OUTPUT/talos-agent-$arch.tmp" "$OUTPUT/talos-agent-$arch"
    if [ ! -f "$OUTPUT/extension-talos-agent-$arch/index.json" ]; then
      say "imager extension build --arch $arch"
      "$imager" extension build --arch "$arch" --agent-binary "$agent" \
        --output "$OUTPUT/extension-talos-agent-$arch" >&2
    fi
  done
  if [[ " ${ARCH_LIST[*]} " == *" arm64 "* ]]; then
    say "scripts/rpi-inputs $BOARD_INPUTS (the pinned Raspberry Pi CM3 inputs)"
    # The boot artifacts do not depend on them: a pin the archive no longer serves is a warning
    # here (publish then skips the board inputs), not a failed release.
    rm -f "$OUTPUT/board-inputs.ok"
    if "$ROOT/scripts/rpi-inputs" "$BOARD_INPUTS" >/dev/null; then
      touch "$OUTPUT/board-inputs.ok"
    else
      say "warning: scripts/rpi-inputs failed: the board inputs are not published"
    fi
  fi
  say "built $OUTPUT for ${ARCH_LIST[*]}"
}

# Prints the digests of $PUBLISH_JSON: text on stdout; Markdown into $GITHUB_STEP_SUMMARY and
# `boot`, `boot_index_digest`, `talos_agent`, `talos_agent_index_digest`, `talos_agent_binary` and
# `board_inputs` and `ipxe_inputs` (the pinned inputs' tags: the imager finds them by tag and pulls
# each file by its pinned digest) into $GITHUB_OUTPUT.
do_digests() {
  [ -s "$PUBLISH_JSON" ] || die "$PUBLISH_JSON is absent: run ci/publish.sh publish first"
  command -v jq >/dev/null || die "jq is not installed: run scripts/setup"
  jq -r '
    def mib: "\(. / 1048576 * 10 | round / 10) MiB";
    def image($title):
      if . == null then "\($title): not published"
      else "\($title): \(.reference)\n  index  \(.pinned)\n"
           + ([.manifests[] | "  \(.arch)  \(.reference)"] | join("\n"))
      end;
    (.boot | image("boot artifact")),
    (.extension | image("talos-agent extension")),
    (.agent | image("talos-agent binaries")),
    (.board_inputs | image("board inputs (rpi-cm3)")),
    (.ipxe_inputs | image("iPXE binaries")),
    "blobs: \(.blobs.pushed) pushed (\(.blobs.pushed_bytes | mib)), \(.blobs.skipped) already there (\(.blobs.skipped_bytes | mib))"
  ' "$PUBLISH_JSON"
  if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    jq -r '
      def rows($what):
        if . == null then empty
        else "| \($what) index | `\(.pinned)` |",
             (.manifests[] | "| \($what) \(.arch) | `\(.reference)` |")
        end;
      "### moonboot published `\(.boot.reference // .extension.reference)`", "",
      "| what | pinned reference |", "|---|---|",
      (.boot | rows("boot artifact")), (.extension | rows("talos-agent extension")),
      (.agent | rows("talos-agent binaries")), (.board_inputs | rows("board inputs")),
      (.ipxe_inputs | rows("iPXE binaries")), "",
      (if .boot then "Boot it: `talos-agent boot \(.boot.pinned)`" else empty end), ""
    ' "$PUBLISH_JSON" >> "$GITHUB_STEP_SUMMARY"
  fi
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    jq -r '
      "boot=\(.boot.pinned // "")", "boot_index_digest=\(.boot.index_digest // "")",
      "talos_agent=\(.extension.pinned // "")", "talos_agent_index_digest=\(.extension.index_digest // "")",
      "talos_agent_binary=\(.agent.pinned // "")", "board_inputs=\(.board_inputs.reference // "")",
      "ipxe_inputs=\(.ipxe_inputs.reference // "")"
    ' "$PUBLISH_JSON" >> "$GITHUB_OUTPUT"
  fi
}

# Signs every pinned reference of $PUBLISH_JSON with `cosign sign --yes` (keyless: the job's OIDC
# identity, a Fulcio certificate and a Rekor entry).
do_sign() {
  local ref
  [ -s "$PUBLISH_JSON" ] || die "$PUBLISH_JSON is absent: run ci/publish.sh publish first"
  command -v cosign >/dev/null || die "cosign is not installed (sigstore/cosign-installer in the workflow)"
  for ref in $(jq -r '(.boot, .extension, .agent) | select(. != null) | .pinned, .manifests[].reference' \
      "$PUBLISH_JSON"); do
    say "cosign sign --yes $ref"
    cosign sign --yes "$ref" >&2 || die "cosign sign $ref failed"
  done
}

do_publish() {
  local imager boot ext bin arches a
  local more_flags=()
  [ -n "${TAG:-}" ] || die "TAG is not set (the tag of the published images, e.g. v1.10.5-cozy.1)"
  imager=$(imager_path)
  [ -x "$imager" ] || die "no imager at $imager: run ci/publish.sh build first"
  boot="$REGISTRY/$IMAGE_PREFIX/boot:$TAG"
  ext="$REGISTRY/$IMAGE_PREFIX/talos-agent:$TAG"
  bin="$REGISTRY/$IMAGE_PREFIX/talos-agent-binary:$TAG"
  arches=$(IFS=,; echo "${ARCH_LIST[*]}")
  for a in "${ARCH_LIST[@]}"; do
    [ -f "$OUTPUT/talos-agent-$a" ] && more_flags+=(--agent-binary "$a=$OUTPUT/talos-agent-$a")
  done
  [ ${#more_flags[@]} -gt 0 ] && more_flags+=(--agent-to "$bin")
  if [ -f "$OUTPUT/board-inputs.ok" ]; then
    more_flags+=(--board-inputs "$BOARD_INPUTS")
  fi
  if [ -f "$OUTPUT/ipxe-inputs.ok" ]; then
    more_flags+=(--ipxe-inputs "$IPXE_INPUTS")
  fi
  if [ -n "${SIGN_KEY:-}" ]; then
    more_flags+=(--sign-key "$SIGN_KEY")
  fi
  if [ -f "$OUTPUT/board-inputs.ok" ] || [ -f "$OUTPUT/ipxe-inputs.ok" ]; then
    more_flags+=(--board-inputs-repository "$REGISTRY/$IMAGE_PREFIX/board-inputs")
  fi
  say "imager publish --to $boot --extension-to $ext ${more_flags[*]} --arch $arches ${PUBLISH_FLAGS[*]}"
  mkdir -p "$(dirname "$PUBLISH_JSON")"
  "$imager" publish --to "$boot" --extension-to "$ext" "${more_flags[@]}" --arch "$arches" --output "$OUTPUT" \
    "${PUBLISH_FLAGS[@]}" --json > "$PUBLISH_JSON.tmp" || { rm -f "$PUBLISH_JSON.tmp"; exit 1; }
  mv -f "$PUBLISH_JSON.tmp" "$PUBLISH_JSON"
  say "wrote $PUBLISH_JSON"
  GITHUB_STEP_SUMMARY='' GITHUB_OUTPUT='' do_digests
}

case "$ACTION" in
  build) do_build ;;
  publish) do_publish ;;
  digests) do_digests ;;
  sign) do_sign ;;
  all) do_build; do_publish ;;
  agents) static_agents "${ARCH_LIST[@]}" ;;
esac
