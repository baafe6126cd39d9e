#!/usr/bin/env bash
# Writes the binary seeds of the fuzz corpora (and copies of the repository's own extension files)
# into fuzz/corpus/<target>/gen-*. The text seeds are committed next to them; these are generated
# each time instead, so that no binary is committed. Idempotent: gen-* files are rewritten.
#
# Needs python3 (standard library only); the `zstd` command for the zstd seeds (skipped, with a
# note, when it is missing); /etc/ssl/certs (Debian's ca-certificates) or `openssl` for the DER
# certificate seeds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
corpus="$here/corpus"

find "$corpus" -name 'gen-*' -type f -delete
for t in cmdline kernel oci layer extension_manifest extension_service extension_tree schematic fdt iomem wait_report apid_spki; do
  mkdir -p "$corpus/$t"
done

# The repository's own extension is a realistic manifest and service spec.
cp "$repo/extensions/talos-agent/manifest.yaml" "$corpus/extension_manifest/gen-talos-agent"
cp "$repo/extensions/talos-agent/talos-agent.yaml" "$corpus/extension_service/gen-talos-agent"

# DER certificates for apid_spki: a few of Debian's CA certificates, else a fresh self-signed one.
n=0
for pem in /etc/ssl/certs/ISRG_Root_X1.pem /etc/ssl/certs/ISRG_Root_X2.pem /etc/ssl/certs/DigiCert_Global_Root_G2.pem; do
  [ -r "$pem" ] || continue
  python3 -c 'import ssl,sys; sys.stdout.buffer.write(ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read()))' "$pem" \
    > "$corpus/apid_spki/gen-$(basename "$pem" .pem).der"
  n=$((n + 1))
done
if [ "$n" = 0 ] && command -v openssl >/dev/null; then
  tmp=$(mktemp -d)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=talos -days 1 \
    -keyout "$tmp/k" -outform DER -out "$corpus/apid_spki/gen-selfsigned.der" 2>/dev/null
  rm -rf "$tmp"
fi

python3 - "$corpus" <<'PY'
import gzip, io, shutil, struct, subprocess, sys, tarfile

corpus = sys.argv[1]
have_zstd = shutil.which("zstd") is not None
if not have_zstd:
    print("seed.sh: no zstd command: zstd seeds skipped", file=sys.stderr)


def write(target, name, data):
    with open(f"{corpus}/{target}/gen-{name}", "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def zst(data):
    return subprocess.run(["zstd", "-19", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout


# --- kernel: arm64 Image, its gzip and zstd forms, EFI zboot, bzImage, a UKI -----------------
def arm64_image(n=4096):
    v = bytearray(n)
    v[0:2] = b"MZ"
    v[8:16] = struct.pack("<Q", 0)  # text_offset
    v[16:24] = struct.pack("<Q", n)  # image_size
    v[24:32] = struct.pack("<Q", 0xA)  # flags
    v[56:60] = b"ARM\x64"
    for i in range(64, n):
        v[i] = (i * 7) % 251
    return bytes(v)


def zboot(payload, method, appended_size=None):
    v = bytearray(0x200)
    v[0:2] = b"MZ"
    v[4:8] = b"zimg"
    v[8:12] = struct.pack("<I", 0x200)
    v[12:16] = struct.pack("<I", len(payload))
    v[24 : 24 + len(method)] = method.encode()
    v[0x38:0x3C] = struct.pack("<I", 0x818223CD)
    v[0x3C:0x40] = struct.pack("<I", 0x40)
    v[0x40:0x44] = b"PE\0\0"
    v[0x44:0x46] = struct.pack("<H", 0xAA64)
    out = bytes(v) + payload
    if appended_size is not None:
        out += struct.pack("<I", appended_size)
    return out + b"\xee" * 16


def bzimage():
    v = bytearray(0x400)
    v[0:2] = b"MZ"
    v[0x1FE:0x200] = b"\x55\xaa"
    v[0x202:0x206] = b"HdrS"
    v[0x206:0x208] = struct.pack("<H", 0x020F)
    return bytes(v)


def pe(machine, sections):
    """A PE file with (name, content, padding) sections, laid out as boot-artifact's tests do."""
    v = bytearray(0x40)
    v[0:2] = b"MZ"
    v[0x3C:0x40] = struct.pack("<I", 0x40)
    v += b"PE\0\0"
    v += struct.pack("<HHIIIHH", machine, len(sections), 0, 0, 0, 16, 0x22)
    v += b"\xcc" * 16
    at = 0x200
    table, data = b"", []
    for name, content, pad in sections:
        raw = len(content) + pad
        table += name.encode().ljust(8, b"\0") + struct.pack("<IIIIIIHHI", len(content), at, raw, at, 0, 0, 0, 0, 0x40000040)
        data.append((at, content, raw))
        at += raw
    v += table
    for at, content, raw in data:
        v = v.ljust(at, b"\0") + content
        v = v.ljust(at + raw, b"\0")
    return bytes(v)


img = arm64_image()
write("kernel", "arm64-image", img)
write("kernel", "arm64-image-gzip", gz(img))
write("kernel", "zboot-gzip", zboot(gz(img), "gzip"))
write("kernel", "zboot-lz4-unsupported", zboot(b"\x04\x22\x4d\x18" + b"\0" * 12, "lz4"))
write("kernel", "bzimage", bzimage())
cmdline = b"talos.platform=metal console=ttyAMA0 console=tty0 slab_nomerge pti=on\0"
write("kernel", "uki-arm64", pe(0xAA64, [(".osrel", b"ID=talos\nVERSION_ID=v1.10.5\n", 7), (".cmdline", cmdline, 11), (".initrd", b"070701" + b"0" * 100, 30), (".linux", zboot(gz(img), "gzip"), 64)]))
write("kernel", "pe-no-sections", pe(0x8664, []))
if have_zstd:
    write("kernel", "arm64-image-zstd", zst(img))
    write("kernel", "zboot-zstd", zboot(zst(img), "zstd", len(img)))

# --- layer / extension_tree: tars, plain, gzip'd (several members) and zstd'd -----------------
def tar(entries, fmt=tarfile.GNU_FORMAT):
    """entries: (path, type, data-or-target, mode); type in file, dir, sym, hard, fifo, char."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for path, kind, data, mode in entries:
            ti = tarfile.TarInfo(path)
            ti.mode, ti.mtime, ti.uid, ti.gid = mode, 0, 0, 0
            if kind == "file":
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
                continue
            ti.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE}[kind]
            if kind in ("sym", "hard"):
                ti.linkname = data
            t.addfile(ti)
    return buf.getvalue()


talos = tar([
    ("./", "dir", b"", 0o755),
    ("./usr/", "dir", b"", 0o755),
    ("./usr/install/", "dir", b"", 0o755),
    ("./usr/install/arm64/", "dir", b"", 0o755),
    ("./usr/install/arm64/vmlinuz", "file", zboot(gz(img), "gzip"), 0o644),
    ("./usr/install/arm64/initramfs.xz", "file", b"\xfd7zXZ\0" + b"\0" * 26, 0o644),
    ("./usr/install/amd64/vmlinuz.efi", "sym", "../arm64/vmlinuz", 0o777),
])
write("layer", "talos-imager", talos)
write("layer", "talos-imager-gzip-two-members", gz(talos[:1024]) + gz(talos[1024:]))
artifact = tar([("boot/kernel", "file", img, 0o644), ("boot/initramfs", "file", b"070701", 0o644), ("boot/cmdline", "file", cmdline[:-1], 0o644)], tarfile.USTAR_FORMAT)
write("layer", "boot-artifact", artifact)
whiteouts = tar([
    ("usr/install/arm64/.wh.vmlinuz", "file", b"", 0o644),
    ("boot/.wh..wh..opq", "file", b"", 0o644),
    ("boot/kernel", "hard", "usr/install/arm64/vmlinuz", 0o644),
    ("usr/install/amd64", "file", b"replaces a directory", 0o644),
    ("manifest.yaml", "fifo", b"", 0o644),
    ("dev/null", "char", b"", 0o666),
    ("./a/../b", "file", b"hostile", 0o644),
])
write("layer", "whiteouts-and-hostile", whiteouts)
longnames = tar([("usr/" + "x" * 200 + "/boot/cmdline", "file", b"long", 0o644), ("boot/cmdline", "file", b"pax", 0o644)], tarfile.PAX_FORMAT)
write("layer", "pax-long-names", longnames)
if have_zstd:
    write("layer", "boot-artifact-zstd", zst(artifact))

manifest = b"version: v1alpha1\nmetadata:\n  name: fuzzext\n  version: v1.0.0\n  author: moonboot\n  description: seed\n  compatibility:\n    talos:\n      version: \">= v1.10.0\"\n"
ext = tar([
    ("manifest.yaml", "file", manifest, 0o644),
    ("rootfs/", "dir", b"", 0o755),
    ("rootfs/usr/local/etc/containers/fuzzext.yaml", "file", b"name: fuzzext\ncontainer:\n  entrypoint: ./bin\nrestart: always\n", 0o644),
    ("rootfs/usr/local/lib/containers/fuzzext/bin", "file", b"\x7fELF" + b"\0" * 60, 0o755),
    ("rootfs/usr/local/lib/containers/fuzzext/sh", "sym", "../../../../bin/sh", 0o777),
    ("rootfs/usr/local/bin/link", "hard", "rootfs/usr/local/bin/fuzz", 0o755),
    ("rootfs/usr/lib/firmware/intel-ucode/06-55-04", "file", b"\x01\0\0\0", 0o644),
])
write("extension_tree", "extension", ext)
write("extension_tree", "extension-gzip", gz(ext))
write("extension_tree", "whiteouts", tar([
    ("rootfs/usr/local/bin/.wh.fuzz", "file", b"", 0o644),
    ("rootfs/usr/local/etc/containers/.wh..wh..opq", "file", b"", 0o644),
    ("rootfs/usr/local/etc/containers/new.yaml", "file", b"name: new\n", 0o666),
    ("rootfs/etc/passwd", "file", b"root::0:0::/:/bin/sh\n", 0o644),
    ("rootfs/usr/local/bin/escape", "sym", "../../../../../etc/shadow", 0o777),
]))

# --- fdt: flattened device trees (Devicetree Specification v0.4, chapter 5) -----------------
def fdt(root, reservations=(), boot_cpuid=0):
    strings, offsets, struct_ = bytearray(), {}, bytearray()

    def put(v):
        struct_.extend(struct.pack(">I", v))

    def pad():
        while len(struct_) % 4:
            struct_.append(0)

    def node(name, props, children):
        put(1)
        struct_.extend(name.encode() + b"\0")
        pad()
        for pname, value in props:
            if pname not in offsets:
                offsets[pname] = len(strings)
                strings.extend(pname.encode() + b"\0")
            put(3)
            put(len(value))
            put(offsets[pname])
            struct_.extend(value)
            pad()
        for c in children:
            node(*c)
        put(2)

    node(*root)
    put(9)
    rsv = b"".join(struct.pack(">QQ", a, s) for a, s in list(reservations) + [(0, 0)])
    off_rsv = 40
    off_struct = off_rsv + len(rsv)
    off_strings = off_struct + len(struct_)
    total = off_strings + len(strings)
    head = struct.pack(">10I", 0xD00DFEED, total, off_struct, off_strings, off_rsv, 17, 16, boot_cpuid, len(strings), len(struct_))
    return head + rsv + bytes(struct_) + bytes(strings)


u32 = lambda *v: b"".join(struct.pack(">I", x) for x in v)
u64 = lambda *v: b"".join(struct.pack(">Q", x) for x in v)
virt = ("", [("#address-cells", u32(2)), ("#size-cells", u32(2)), ("compatible", b"linux,dummy-virt\0"), ("interrupt-parent", u32(0x8002))], [
    ("chosen", [("bootargs", b"console=ttyAMA0 root=/dev/vda1\0"), ("linux,initrd-start", u64(0x48000000)), ("linux,initrd-end", u64(0x48800000)),
                ("kaslr-seed", u64(0x1234)), ("rng-seed", b"\x5a" * 64), ("stdout-path", b"/pl011@9000000\0"),
                ("linux,uefi-system-table", u64(0xBFE00018)), ("linux,uefi-mmap-start", u64(0xBE5A4018))], []),
    ("memory@40000000", [("device_type", b"memory\0"), ("reg", u64(0x40000000, 0x60000000))], []),
    ("cpus", [("#address-cells", u32(1)), ("#size-cells", u32(0))], [("cpu@0", [("device_type", b"cpu\0"), ("compatible", b"arm,cortex-a57\0"), ("reg", u32(0)), ("enable-method", b"psci\0")], [])]),
    ("pl011@9000000", [("compatible", b"arm,pl011\0arm,primecell\0"), ("reg", u64(0x9000000, 0x1000)), ("status", b"okay\0")], []),
])
write("fdt", "qemu-virt", fdt(virt, reservations=[(0x48000000, 0x800000)]))
write("fdt", "no-chosen", fdt(("", [("compatible", b"acme,board\0")], [("memory@0", [("reg", u64(0, 0x10000000))], [])])))
write("fdt", "empty-root", fdt(("", [], [])))

# --- iomem with a kernel header and sizes after a NUL (see fuzz_targets/iomem.rs) ------------
qemu = open(f"{corpus}/iomem/qemu-virt", "rb").read()
write("iomem", "qemu-virt-big-kernel", qemu + b"\0" + struct.pack("<5Q", 0x80000, 0x4000000, 0x3800000, 0x6000000, 0x20000))
write("iomem", "qemu-virt-no-room", qemu + b"\0" + struct.pack("<5Q", 0, 0x40000000, 0x40000000, 0x40000000, 0x1000))
write("iomem", "small-ram", b"40000000-40ffffff : System RAM\n  40000000-4000ffff : reserved\n\0" + struct.pack("<5Q", 0, 0x400000, 0x300000, 0x200000, 0x1000))
PY

echo "seed.sh: $(find "$corpus" -name 'gen-*' -type f | wc -l) generated seeds under $corpus"
